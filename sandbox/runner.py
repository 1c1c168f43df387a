"""The process that runs inside a sandbox: it loads a submission and executes calls.

It decides nothing. The host sends requests over the protocol pipe and gets back
values, handles or errors; every verdict is made on the host. Started before a
submission exists (so a pool can keep warm ones), it imports numpy (and torch,
when the problem allows it) first, then waits for `load`.

Requests (JSON header, see sandbox/wire.py):
    {"op": "load", "files": {name: text}, "entry": "solution.py"}
    {"op": "call", "target": {"fn": name} | {"handle": id, "method": name} | {"helper": "module:function"},
     "args": [...], "kwargs": {...}, "keep": [result positions kept as handles] | "all",
     "return_args": [arg positions whose post-call value is sent back]}
    {"op": "call_many", "target": (as for call), "calls": N, "keep": (as for call), "stop_on_error": bool}
        with the payload a list of N (args, kwargs) pairs: the target runs on each in order, in one exchange.
        The reply's value is a list of (true, value) or (false, error) pairs, one per case in order; an error
        (the case raised, or its value cannot be sent) is described as for call and hides no other case's
        value. With stop_on_error the list ends at the first error and later cases never run.
    {"op": "getattr", "handle": id, "name": attr}
    {"op": "stand_in", "names": [function names]}
        after load: each named module-level function of the submission is replaced by a proxy that asks
        the host to run it (the grader's root-cause analysis: "does this test pass when that function is
        right?"). A proxy call writes {"host_call": name} with the payload (args, kwargs) and waits for the
        host's {"ok": true} with (result, args_after, kwargs_after), writes what the host's function did to its
        arguments back into the caller's (running statistics, in-place updates) and returns the result; or
        {"ok": false, "error": text}, which it raises as StandInError.
        Nothing of the host's function ever enters the sandbox: only its results, for arguments the
        candidate's code chose.
    {"op": "ping"}
Replies: {"ok": true, "value": ..., "args_after": [...]} or {"ok": false, "error": {...}}.
A call_many reply is one frame, so the host's caps on a reply (sandbox/wire.py Limits) bound the whole batch.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from types import ModuleType
from typing import Any, BinaryIO

import numpy as np

import sandbox.wire as wire

SUBMISSION_DIR = "/tmp/submission"
MAX_MESSAGE_CHARS = 4000
HELPER_PACKAGE = "sandbox.builtins"


class Runner:
    def __init__(self, proto_in: BinaryIO, proto_out: BinaryIO, torch_allowed: bool,
                 submission_dir: str = SUBMISSION_DIR) -> None:
        self.submission_dir = submission_dir
        self.proto_in = proto_in
        self.proto_out = proto_out
        self.objects: dict[int, Any] = {}
        self.next_id = 1
        self.module: ModuleType | None = None
        self.entry_name = "solution.py"
        self.torch = None
        if torch_allowed:
            import torch

            torch.set_num_threads(1)
            self.torch = torch

    # handles -----------------------------------------------------------------
    def keep(self, obj: Any) -> wire.Handle:
        hid = self.next_id
        self.next_id += 1
        self.objects[hid] = obj
        try:
            tname = str(type(obj).__name__)[:100]
        except Exception:  # a hostile metaclass; the name is only a label
            tname = "object"
        return wire.Handle(hid, tname)

    def lookup(self, hid: int) -> Any:
        if hid not in self.objects:
            raise KeyError(f"unknown handle {hid}")
        return self.objects[hid]

    def make_tensor(self, arr: np.ndarray, requires_grad: bool) -> Any:
        if self.torch is None:
            raise RuntimeError("this problem's sandbox has no torch")
        t = self.torch.from_numpy(arr)
        return t.requires_grad_(True) if requires_grad else t

    # ops -----------------------------------------------------------------------
    def op_ping(self, req: dict[str, Any], _: Any) -> dict[str, Any]:
        return {"ok": True, "value": None}

    def op_load(self, req: dict[str, Any], _: Any) -> dict[str, Any]:
        files = req.get("files", {})
        self.entry_name = req.get("entry", "solution.py")
        os.makedirs(self.submission_dir, exist_ok=True)
        for name, text in files.items():
            with open(os.path.join(self.submission_dir, name), "w", encoding="utf-8") as fh:
                fh.write(text)
        sys.path.insert(0, self.submission_dir)
        path = os.path.join(self.submission_dir, self.entry_name)
        spec = importlib.util.spec_from_file_location("solution", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["solution"] = module
        spec.loader.exec_module(module)
        self.module = module
        return {"ok": True, "value": None}

    def resolve_target(self, target: dict[str, Any]) -> Any:
        if "fn" in target:
            if self.module is None:
                raise RuntimeError("no submission loaded")
            name = target["fn"]
            if not hasattr(self.module, name):
                raise MissingName(name)
            return getattr(self.module, name)
        if "handle" in target:
            obj = self.lookup(target["handle"])
            method = target.get("method")
            if method is None:
                return obj
            if not hasattr(obj, method):
                raise MissingName(f"{type(obj).__name__}.{method}")
            return getattr(obj, method)
        if "helper" in target:
            mod_name, _, fn_name = str(target["helper"]).partition(":")
            module = importlib.import_module(f"{HELPER_PACKAGE}.{mod_name}")
            return getattr(module, fn_name)
        raise ValueError("unknown call target")

    def op_call(self, req: dict[str, Any], args_value: Any) -> dict[str, Any]:
        fn = self.resolve_target(req.get("target", {}))
        args, kwargs = args_value if args_value is not None else ([], {})
        result = self.kept(fn(*args, **kwargs), req.get("keep", []))
        reply: dict[str, Any] = {"ok": True, "payload": result}
        if req.get("return_args"):
            reply["args_after"] = [args[i] for i in req["return_args"] if i < len(args)]
        return reply

    def kept(self, result: Any, keep: Any) -> Any:
        """The result with the positions `keep` names (or all of it) replaced by handles."""
        if keep == "all":
            return self.keep(result)
        if keep:
            if type(result) not in (tuple, list):
                raise ReturnShape(f"expected a tuple of results, got {type(result).__name__}")
            return tuple(self.keep(v) if i in keep else v for i, v in enumerate(result))
        return result

    def op_call_many(self, req: dict[str, Any], cases: Any) -> dict[str, Any]:
        calls = req.get("calls")
        if (type(cases) is not list or type(calls) is not int or len(cases) != calls
                or not all(type(c) in (tuple, list) and len(c) == 2 and type(c[0]) is list and type(c[1]) is dict
                           for c in cases)):
            raise ValueError("call_many expects a list of `calls` (args, kwargs) pairs")
        fn = self.resolve_target(req.get("target", {}))
        keep, stop = req.get("keep", []), bool(req.get("stop_on_error"))
        # Each result is encoded as soon as it exists, so one that cannot be sent is that case's error alone.
        enc = wire.Encoder(self.keep)
        nodes: list[Any] = []
        for args, kwargs in cases:
            mark = len(enc.buffers)
            try:
                node = {"$t": [True, enc.encode(self.kept(fn(*args, **kwargs), keep))]}
                # The encoder keeps views of the arrays, and the frame is written after the last case: a
                # forward that reuses its output buffer would otherwise send every case the last case's values
                # (a single call's reply is written before the next call runs). Copy this case's bytes now.
                enc.buffers[mark:] = [bytes(b) for b in enc.buffers[mark:]]
            except BaseException as exc:  # candidate code may raise anything, SystemExit included
                del enc.buffers[mark:]  # the arrays of a value that was not sent
                node = {"$t": [False, enc.encode(describe(exc, self.entry_name, self.submission_dir))]}
            nodes.append(node)
            if stop and node["$t"][0] is False:
                break
        return {"ok": True, "encoded": ({"$l": nodes}, enc.buffers)}

    def op_stand_in(self, req: dict[str, Any], _: Any) -> dict[str, Any]:
        if self.module is None:
            raise RuntimeError("no submission loaded")
        names = req.get("names")
        if type(names) is not list or not all(type(n) is str and n.isidentifier() for n in names):
            raise ValueError("stand_in expects a list of function names")
        for name in names:
            setattr(self.module, name, self._proxy(name))
        return {"ok": True, "value": None}

    def _proxy(self, name: str) -> Any:
        def stand_in(*args: Any, **kwargs: Any) -> Any:
            # Encoded before anything is written (wire.send), so an argument that cannot be sent raises here and
            # the stream stays in step.
            wire.send(self.proto_out, {"host_call": name}, (list(args), dict(kwargs)))
            header, value = wire.receive(self.proto_in, from_handle=self.lookup, make_tensor=self.make_tensor)
            if header.get("ok") is not True:
                raise StandInError(str(header.get("error", "the stand-in failed"))[:MAX_MESSAGE_CHARS])
            result, args_after, kwargs_after = value
            for before, after in zip(args, args_after):
                _write_back(before, after)
            for key, before in kwargs.items():
                _write_back(before, kwargs_after.get(key))
            return result

        stand_in.__name__ = stand_in.__qualname__ = name
        return stand_in

    def op_getattr(self, req: dict[str, Any], _: Any) -> dict[str, Any]:
        obj = self.lookup(req["handle"])
        name = req["name"]
        if not hasattr(obj, name):
            raise MissingName(f"{type(obj).__name__}.{name}")
        value = getattr(obj, name)
        return {"ok": True, "payload": self.keep(value) if req.get("keep") else value}

    # loop ------------------------------------------------------------------------
    def serve(self) -> None:
        wire.send(self.proto_out, {"ok": True, "ready": True, "torch": self.torch is not None})
        while True:
            try:
                header, value = wire.receive(self.proto_in, from_handle=self.lookup, make_tensor=self.make_tensor)
            except EOFError:
                return
            op = getattr(self, f"op_{header.get('op')}", None)
            try:
                if op is None:
                    raise ValueError(f"unknown op {header.get('op')!r}")
                reply = op(header, value)
            except BaseException as exc:  # candidate code may raise anything, SystemExit included
                reply = {"ok": False, "error": describe(exc, self.entry_name, self.submission_dir)}
            flush_output()
            self.reply(reply)

    def reply(self, reply: dict[str, Any]) -> None:
        encoded = reply.pop("encoded", None)
        if encoded is not None:
            node, buffers = encoded
            wire.write_frame(self.proto_out, dict(reply, value=node), buffers)
            return
        payload = reply.pop("payload", None)
        args_after = reply.pop("args_after", None)
        try:
            if args_after is not None:
                payload = (payload, tuple(args_after))
                reply["with_args"] = True
            wire.send(self.proto_out, reply, payload, to_handle=self.keep)
        except Exception as exc:  # an unencodable result is the candidate's problem, not the protocol's
            wire.send(self.proto_out, {"ok": False, "error": describe(exc, self.entry_name, self.submission_dir)})


class MissingName(AttributeError):
    """The submission does not define a name the grader calls."""


def _write_back(before: Any, after: Any) -> None:
    """Make `before` show what a stand-in did to its copy `after`: arrays written into, dict entries set."""
    if type(before) is np.ndarray and type(after) is np.ndarray:
        if before.shape == after.shape and before.flags.writeable:
            before[...] = after
    elif type(before) is dict and type(after) is dict:
        for key, value in after.items():
            if key in before and type(before[key]) in (np.ndarray, dict, list):
                _write_back(before[key], value)
                if type(before[key]) is np.ndarray and type(value) is np.ndarray and before[key].shape != value.shape:
                    before[key] = value
            else:
                before[key] = value
    elif type(before) is list and type(after) is list and len(before) == len(after):
        for i, value in enumerate(after):
            if type(before[i]) in (np.ndarray, dict, list):
                _write_back(before[i], value)
            else:
                before[i] = value


class StandInError(RuntimeError):
    """The host could not run a stand-in function for these arguments."""


class ReturnShape(TypeError):
    """A result that is not the tuple the contract asks for."""


def _safe_str(value: Any) -> str:
    try:
        text = str(value)
        return text if type(text) is str else "<unprintable>"
    except BaseException:
        return "<unprintable>"


def describe(exc: BaseException, entry_name: str, submission_dir: str = SUBMISSION_DIR) -> dict[str, Any]:
    """An error the host can show: type, message, the candidate's lines of the traceback."""
    info: dict[str, Any] = {"type": _safe_str(type(exc).__name__)[:100], "message": _safe_str(exc)[:MAX_MESSAGE_CHARS]}
    if isinstance(exc, MissingName):
        info["missing"] = _safe_str(exc.args[0] if exc.args else "")
    if isinstance(exc, SystemExit):
        info["message"] = f"called sys.exit({_safe_str(exc.code)[:100]})"
    if isinstance(exc, SyntaxError):
        info["line"] = exc.lineno
        info["file"] = os.path.basename(exc.filename or entry_name)
        info["message"] = f"{exc.msg} ({info['file']}, line {exc.lineno})"
    try:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(submission_dir)]
        if frames and "line" not in info:
            info["line"] = frames[-1].lineno
            info["file"] = os.path.basename(frames[-1].filename)
        lines = [f'  File "{os.path.basename(f.filename)}", line {f.lineno}, in {f.name}\n    {(f.line or "").strip()}'
                 for f in frames[-8:]]
        info["traceback"] = "\n".join(lines)[:MAX_MESSAGE_CHARS]
    except BaseException:
        info["traceback"] = ""
    return info


def flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def main() -> None:
    # fd 0/1 carry the protocol; the candidate's prints go to fd 2, which the host
    # drains with a size cap. Move the protocol out of the way first so a print
    # can never corrupt a frame.
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull)
    sys.stdout = os.fdopen(1, "w", buffering=1, errors="replace", closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, errors="replace", closefd=False)
    sys.dont_write_bytecode = True
    Runner(proto_in, proto_out, torch_allowed=os.environ.get("GRADER_TORCH") == "1").serve()


if __name__ == "__main__":
    main()
