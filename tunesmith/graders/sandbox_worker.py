"""The python graders' sandbox, as the child process runs it (`python -I sandbox_worker.py LIMITS`): limits set,
an audit hook installed that no later code can remove, then the grader's source run once and `grade(sample, item)`
called for each request line. Standard library only: it runs before anything of the grader's is trusted."""

import contextlib
import json
import os
import resource
import sys
import traceback

BLOCKED_PREFIXES = ("socket.", "subprocess.", "os.exec", "os.posix_spawn", "os.spawn", "ctypes.", "resource.")
BLOCKED_EVENTS = {"os.system", "os.fork", "os.forkpty", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill"}
BLOCKED_MODULES = {"_posixsubprocess", "socket", "_socket", "ssl", "_ssl", "multiprocessing"}
PATH_EVENTS = {
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "os.chmod",
    "os.chown",
    "os.link",
    "os.symlink",
    "os.truncate",
    "os.utime",
    "shutil.rmtree",
    "shutil.move",
    "shutil.copyfile",
    "os.mkfifo",
    "os.mknod",
}
PRELOADED = ("ctypes", "numpy")
"""Imported before the hook: numpy loads native code through ctypes when imported; afterwards every ctypes call
(`ctypes.*` events) is refused."""
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _limit(memory: int, file_size: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _inside(path: object, root: str) -> bool:
    if isinstance(path, int):  # a descriptor already opened
        return True
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str):
        return False
    full = os.path.realpath(path)
    return full == root or full.startswith(root + os.sep)


def _hook(root: str):
    def hook(event: str, args: tuple) -> None:
        if event.startswith(BLOCKED_PREFIXES) or event in BLOCKED_EVENTS:
            raise PermissionError(f"{event} is not allowed in a python grader")
        if event == "import" and args and str(args[0]).split(".")[0] in BLOCKED_MODULES:
            raise PermissionError(f"importing {args[0]} is not allowed in a python grader")
        if event == "open" and len(args) >= 3:
            path, mode, flags = args[0], args[1] or "", args[2] or 0
            writes = any(c in str(mode) for c in "wax+") or bool(int(flags) & WRITE_FLAGS)
            if writes and not _inside(path, root):
                raise PermissionError(f"a python grader may write only inside its temporary folder, not {path}")
        if event in PATH_EVENTS and args and not all(_inside(a, root) for a in args[:2] if isinstance(a, str | bytes)):
            raise PermissionError(f"{event} outside the grader's temporary folder is not allowed")

    return hook


def main() -> None:
    memory, file_size = int(sys.argv[1]), int(sys.argv[2])
    root = os.path.realpath(os.getcwd())
    channel = os.fdopen(os.dup(1), "w")  # answers go here; the grader's prints go to stderr (discarded)
    os.dup2(2, 1)
    requests = sys.stdin
    _limit(memory, file_size)
    for name in PRELOADED:
        with contextlib.suppress(ImportError):
            __import__(name)
    sys.addaudithook(_hook(root))
    source = json.loads(requests.readline())["source"]
    namespace: dict = {"__name__": "grader"}
    try:
        exec(compile(source, "grader.py", "exec"), namespace)  # the user's own grader, inside the sandbox
        grade = namespace["grade"]
        channel.write(json.dumps({"ready": True}) + "\n")
    except BaseException:
        channel.write(json.dumps({"error": traceback.format_exc(limit=-3)}) + "\n")
        channel.flush()
        return
    channel.flush()
    for line in requests:
        call = json.loads(line)
        try:
            score = grade(call["sample"], call["item"])
            if isinstance(score, bool) or not isinstance(score, int | float):
                raise TypeError(f"grade returned {type(score).__name__}, not a number")
            reply = {"score": float(score)}
        except BaseException:
            reply = {"error": traceback.format_exc(limit=-3)}
        channel.write(json.dumps(reply) + "\n")
        channel.flush()


if __name__ == "__main__":
    main()
