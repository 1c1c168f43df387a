"""One settings object for the whole service, read from GRADER_* environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from grader.engine import DEFAULT_SEED, GradingOptions
from grader.isolation import DockerOptions, get_backend
from grader.isolation.base import Backend

PLACEHOLDER_SECRETS = {"", "change-me", "changeme", "secret", "dev-webhook-secret"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRADER_", extra="ignore")

    environment: str = Field("development", description="'development' or 'production'")
    data_dir: Path = Field(Path("data"), description="SQLite file, logs and artifacts live here")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in data_dir")
    sandbox_backend: Literal["local", "docker"] = Field(
        "local", description="'local' (bubblewrap, cgroups v1 or v2, seccomp) or 'docker' (a container per submission)")
    sandbox_zygote: bool = Field(True, description="local backend: fork each sandbox from a fork server per image "
                                                   "(numpy/torch imported once) instead of starting bwrap and "
                                                   "Python for every session")
    docker_pool_size: int = Field(2, ge=0, le=32, description="warm sandbox containers kept per image (docker "
                                                              "backend); 0: every sandbox starts cold")
    docker_url: str | None = Field(None, description="the Docker daemon (docker backend); default: DOCKER_HOST "
                                                     "or the local socket")
    docker_image_numpy: str = Field("dl-grader/sandbox:numpy", description="sandbox image of numpy-only problems")
    docker_image_torch: str = Field("dl-grader/sandbox:torch", description="sandbox image of problems with torch")
    docker_cgroup_root: str = Field("/sys/fs/cgroup", description="the Docker host's cgroup file system as the "
                                                                  "grader sees it (sandbox CPU clocks, processes)")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=0,
                         description="submissions graded at once by `grader serve`'s embedded pool; 0: the API "
                                     "alone (a `grader worker` grades)")
    seed: int = Field(DEFAULT_SEED, description="master seed of every grading run")
    submission_budget_s: float = Field(600.0, gt=0, description="wall-clock budget of one submission")
    test_timeout_cap_s: float | None = Field(None, gt=0, description="upper bound on every test's time limit")
    import_timeout_cap_s: float | None = Field(None, gt=0, description="upper bound on the import time limit")
    max_code_bytes: int = Field(256 * 1024, gt=0, description="total size of a submission's files")
    max_files: int = Field(16, ge=1)
    # Tell root causes from the failures that follow from them (regradings with the reference standing in).
    root_causes: bool = True
    webhook_secret: str = Field("dev-webhook-secret", description="HMAC-SHA256 key for webhook signatures")
    webhook_attempts: int = Field(5, ge=1)
    webhook_backoff_s: float = Field(2.0, gt=0, description="wait after the first failed delivery; doubles each time")
    webhook_timeout_s: float = Field(10.0, gt=0, description="time limit of one webhook request")
    max_request_bytes: int = Field(4 * 1024 * 1024, gt=0, description="largest HTTP request body accepted")
    job_max_attempts: int = Field(3, ge=1, description="gradings started for one submission before it is failed")
    webhook_allowed_hosts: list[str] = Field(default_factory=list,
                                             description="host names a callback_url may point at; empty: any "
                                                         "(JSON list, e.g. '[\"ci.example.com\"]')")
    webhook_allowed_networks: list[str] = Field(
        default_factory=list, description="networks (CIDR) a callback_url may reach although they are loopback, "
                                          "private or link-local; empty: public addresses only "
                                          "(JSON list, e.g. '[\"10.1.0.0/16\"]')")
    job_lease_s: float = Field(60.0, gt=0, description="a running job whose owner stops renewing it for this "
                                                       "long is taken over by another worker")

    # Abuse limits (per API process; a cluster of N API processes allows up to N times these).
    rate_limit_submissions_per_min: float = Field(60.0, ge=0, description="submissions one token may send per "
                                                  "minute (POST /v1/submissions); 0: no limit")
    rate_limit_submissions_burst: int = Field(20, ge=1, description="submissions one token may send at once "
                                                                     "before the per-minute rate applies")
    rate_limit_requests_per_min: float = Field(1200.0, ge=0, description="requests of any kind one token may "
                                               "make per minute; 0: no limit")
    auth_failure_limit: int = Field(20, ge=1, description="failed authentications from one client address "
                                                         "within auth_failure_window_s before it is locked out")
    auth_failure_window_s: float = Field(300.0, gt=0, description="window of auth_failure_limit; a locked-out "
                                                                 "address is answered 429 until it passes")
    max_connections: int = Field(1000, ge=1, description="open HTTP connections `grader serve` accepts at once; "
                                                         "more are answered 503")
    http_keepalive_s: float = Field(5.0, gt=0, description="an idle keep-alive connection is closed after this")
    log_format: Literal["json", "text"] = Field("json", description="'json': one JSON object per line (with the "
                                                "submission id while grading one); 'text': for a terminal")

    queue: Literal["embedded", "celery"] = Field(
        "embedded", description="'embedded' (the database queue, graded by `grader serve`'s pool or `grader "
                                "worker`) or 'celery' (messages on a Redis broker, graded by `grader worker`s)")
    broker_url: str | None = Field(None, description="the Celery broker, e.g. redis://127.0.0.1:6379/0; required "
                                                     "with queue=celery")
    worker_concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1,
                                    description="submissions one `grader worker` grades at once")
    redeliver_after_s: float = Field(300.0, gt=0, description="a queued submission no worker took for this long "
                                                              "is published to the broker again")
    # Redis hands an unacknowledged message to another worker after this long. With acks_late a message stays
    # unacknowledged for its whole grading, so this must outlast the longest grading (the submission budget,
    # 600 s, with its wall-clock backstop): a shorter one makes Redis redeliver messages still being graded
    # (harmless, the claim answers "later", but wasted). It is not what recovers a dead worker's jobs: a
    # killed grading child is redelivered at once (reject on worker lost), and a whole machine gone is
    # taken back by its lease and republished by the sweeper, so a long timeout costs nothing.
    broker_visibility_timeout_s: float = Field(3600.0, gt=0, description="seconds Redis waits for an "
                                               "unacknowledged message before redelivering it; longer than "
                                               "any grading")

    @model_validator(mode="after")
    def _celery_needs_a_broker(self) -> Settings:
        if self.queue != "celery":
            return self
        if not self.broker_url:
            raise ValueError("GRADER_QUEUE=celery needs GRADER_BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(self.broker_url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as exc:
            raise ValueError(f"GRADER_BROKER_URL is not a URL: {exc}") from None
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError(f"GRADER_BROKER_URL must be redis://HOST[:PORT]/DB or rediss://...; got "
                             f"{broker_display(self.broker_url)!r}")
        if self.broker_visibility_timeout_s <= self.submission_budget_s:
            raise ValueError(f"GRADER_BROKER_VISIBILITY_TIMEOUT_S ({self.broker_visibility_timeout_s:g}) must be "
                             f"longer than a grading (GRADER_SUBMISSION_BUDGET_S, {self.submission_budget_s:g})")
        return self

    @model_validator(mode="after")
    def _networks_are_cidrs(self) -> Settings:
        import ipaddress

        for cidr in self.webhook_allowed_networks:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"GRADER_WEBHOOK_ALLOWED_NETWORKS: {cidr!r} is not a network (CIDR)") from None
        return self

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_production(self) -> Settings:
        if self.environment == "production" and self.webhook_secret in PLACEHOLDER_SECRETS:
            raise ValueError("GRADER_WEBHOOK_SECRET is a placeholder: set a real secret in production")
        return self

    def grading_options(self) -> GradingOptions:
        """The part of the settings the grading engine needs."""
        return GradingOptions(
            seed=self.seed,
            submission_budget_s=self.submission_budget_s,
            test_timeout_cap_s=self.test_timeout_cap_s,
            import_timeout_cap_s=self.import_timeout_cap_s,
            max_code_bytes=self.max_code_bytes,
            max_files=self.max_files,
            root_causes=self.root_causes,
        )

    def docker_options(self) -> DockerOptions:
        """The part of the settings the Docker sandbox backend needs."""
        return DockerOptions(pool_size=self.docker_pool_size, docker_url=self.docker_url,
                             image_numpy=self.docker_image_numpy, image_torch=self.docker_image_torch,
                             cgroup_root=self.docker_cgroup_root)

    def sandbox(self, name: str | None = None) -> Backend:
        """The sandbox backend these settings choose (or `name`), created once per process."""
        return get_backend(name or self.sandbox_backend, docker=self.docker_options(), zygote=self.sandbox_zygote)

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'grader.db').resolve()}"


def broker_display(url: str | None) -> str:
    """A broker URL fit for logs: scheme, host, port and path, never the password."""
    if not url:
        return "none"
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; a FastAPI dependency, overridden in tests."""
    return Settings()
