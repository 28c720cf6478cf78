"""The tests' commands, each in a process of its own forked from one that has already
imported TensorFlow.

A fresh interpreter spends about 5 s of CPU importing TensorFlow and Keras before a
command does anything, and the suite starts well over a hundred commands. Here one
server process per test worker imports them once (with the command line's quiet
logging, as `tf-autoencoder` would), then forks for each command: the command still
runs in a process of its own, with its own exit status, stdout, stderr, working folder,
environment and signals, but starts in a moment. Nothing has run in TensorFlow before the
fork (no op, no eager context, no thread pool), which is what makes forking it safe.
A command that ends normally or by sys.exit ends as the package's own scripts do
(cli.exit_with), without the interpreter's teardown of its modules.

What depends on a fresh interpreter runs in one (`fresh=True`, and always for `-c`
snippets and `--verbose`, which test what importing TensorFlow prints or loads), as
does everything when TF_AUTOENCODER_TEST_FRESH is set (to compare, if a forked run is
ever in doubt).

    run(["train.py", "--epochs", "1"], cwd=..., env=..., timeout=300) -> CompletedProcess
    start(["train.py", ...], env=..., stderr=PIPE) -> a Popen-like process
"""
from __future__ import annotations

import atexit
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HEADER = struct.Struct("!I")


# ---------------------------------------------------------------- the test's side


def needs_fresh_interpreter(args) -> bool:
    return bool(os.environ.get("TF_AUTOENCODER_TEST_FRESH")) or (
        args[:1] == ["-c"] or "--verbose" in args)


_server = None


def _connect():
    """A connection to this process's server, started on first use."""
    global _server
    if _server is None or _server.poll() is not None:
        folder = tempfile.mkdtemp(prefix="forked-commands-")
        path = os.path.join(folder, "socket")
        log = open(os.path.join(folder, "server.log"), "w+")
        # Its stdin is a pipe it watches: when this process ends, however, so does it.
        # Its stdout says one line, once it listens (an end of file: it failed).
        _server = subprocess.Popen([sys.executable, os.path.abspath(__file__), path],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                   cwd=REPO, text=True)
        _server.path, _server.log = path, log
        atexit.register(_stop, _server, folder)
        if _server.stdout.readline() != "listening\n":
            log.seek(0)
            raise RuntimeError(f"the command server failed to start:\n{log.read()}")
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(_server.path)
    return connection


def _stop(server, folder):
    """At this process's end: the server ends when its stdin closes; then its folder goes."""
    server.stdin.close()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
    server.stdout.close()
    server.log.close()
    shutil.rmtree(folder, ignore_errors=True)


def _send(connection, message: dict, fds=()):
    data = json.dumps(message).encode()
    socket.send_fds(connection, [_HEADER.pack(len(data)) + data], list(fds))


def _receive(connection) -> dict | None:
    """The next message, or None where the other side closed the connection."""
    header = _read_exactly(connection, _HEADER.size)
    if header is None:
        return None
    return json.loads(_read_exactly(connection, _HEADER.unpack(header)[0]))


def _read_exactly(connection, size):
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class ForkedProcess:
    """A command forked by the server, as much of subprocess.Popen as the tests use:
    pid, stdout/stderr (where PIPE was asked), poll, wait, communicate, send_signal,
    terminate, kill, returncode."""

    def __init__(self, args, *, cwd=None, env=None, stdout=None, stderr=None, text=True):
        self.args = args
        self.returncode = None
        self._connection = _connect()
        ends, self._ours = [], {}
        for name, asked in (("stdout", stdout), ("stderr", stderr)):
            if asked == subprocess.PIPE:
                read, write = os.pipe()
                self._ours[name] = os.fdopen(read, "r" if text else "rb")
                ends.append(write)
            elif asked == subprocess.DEVNULL:
                ends.append(os.open(os.devnull, os.O_WRONLY))
            elif asked is None:
                ends.append(os.dup(1 if name == "stdout" else 2))
            else:  # an open file
                ends.append(os.dup(asked.fileno()))
        self.stdout, self.stderr = self._ours.get("stdout"), self._ours.get("stderr")
        _send(self._connection, {"args": list(args), "cwd": os.path.abspath(cwd or os.getcwd()),
                                 "env": dict(os.environ if env is None else env)}, ends)
        for end in ends:
            os.close(end)
        started = _receive(self._connection)
        if started is None:
            raise RuntimeError("the command server closed the connection before the fork")
        self.pid = started["pid"]

    def poll(self):
        if self.returncode is None:
            self._connection.setblocking(False)
            try:
                self._connection.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                return None
            finally:
                self._connection.setblocking(True)
            self._finish()
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            self._connection.settimeout(timeout)
            try:
                self._finish()
            except socket.timeout:
                self._connection.settimeout(None)
                raise subprocess.TimeoutExpired(self.args, timeout) from None
        return self.returncode

    def _finish(self):
        ended = _receive(self._connection)
        # No message: the supervising fork died with the server, which cannot happen
        # while this process holds the server's stdin open; say so rather than hang.
        self.returncode = ended["returncode"] if ended else -signal.SIGKILL
        self._connection.close()

    def communicate(self, timeout=None):
        """(stdout, stderr) once the command ended: what it wrote to the pipes asked for
        (read beside each other, so a full pipe cannot stall it), else None."""
        read = {}
        threads = [threading.Thread(target=lambda n=name, f=file: read.__setitem__(n, f.read()),
                                    daemon=True) for name, file in self._ours.items()]
        for thread in threads:
            thread.start()
        self.wait(timeout)
        for thread in threads:
            thread.join()
        for file in self._ours.values():
            file.close()
        return read.get("stdout"), read.get("stderr")

    def send_signal(self, number):
        if self.returncode is None:
            os.kill(self.pid, number)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)


def start(args, *, cwd=None, env=None, stdout=None, stderr=None, text=True, fresh=False):
    """`python *args` started as a process: forked from the server, or a fresh
    interpreter (subprocess.Popen) where the command needs one."""
    if fresh or needs_fresh_interpreter(args):
        return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env,
                                stdout=stdout, stderr=stderr, text=text)
    return ForkedProcess(args, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=text)


def run(args, *, cwd=None, env=None, timeout=300, fresh=False) -> subprocess.CompletedProcess:
    """`python *args` to its end, as subprocess.run(capture_output=True, text=True)."""
    process = start(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    fresh=fresh)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess([sys.executable, *args], process.returncode, stdout, stderr)


# ---------------------------------------------------------------- the server's side


def serve(path):
    """Imports TensorFlow as the command line does, then forks a command for each
    connection until its stdin closes. Returns the command to run in a forked child, or
    None in the server once it is done."""
    sys.path[0] = REPO  # not this file's folder: a command imports what `python` there would
    from tf_autoencoder.logs import set_up_logging

    set_up_logging(verbose=False)
    import keras  # noqa: F401
    import tensorflow  # noqa: F401

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    # The supervising forks are reaped by the kernel; each reports its command's status.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    watch = selectors.DefaultSelector()
    watch.register(listener, selectors.EVENT_READ)
    watch.register(sys.stdin, selectors.EVENT_READ)
    print("listening", flush=True)
    while True:
        for key, _ in watch.select():
            if key.fileobj is sys.stdin:  # the test process ended
                listener.close()
                os.unlink(path)
                return None
            connection, _ = listener.accept()
            request = _receive_with_fds(connection)
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:
                listener.close()
                watch.close()
                return _supervise(connection, *request)
            connection.close()
            for fd in request[1]:
                os.close(fd)


def _receive_with_fds(connection):
    header, fds, _, _ = socket.recv_fds(connection, _HEADER.size, 3)
    size = _HEADER.unpack(header)[0]
    return json.loads(_read_exactly(connection, size)), fds


def _supervise(connection, request, fds):
    """In a fork of the server: forks the command, tells the test its pid, then its exit
    status (as Popen's returncode: minus the signal that ended it), and exits."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        connection.close()
        return _prepare_command(request, fds)
    for fd in fds:
        os.close(fd)
    _send(connection, {"pid": pid})
    _, status = os.waitpid(pid, 0)
    _send(connection, {"returncode": os.waitstatus_to_exitcode(status)})
    os._exit(0)


def _prepare_command(request, fds):
    """The command's process as `python ARGS` run in `cwd` with `env` would have it."""
    stdin = os.open(os.devnull, os.O_RDONLY)
    for target, fd in zip((0, 1, 2), (stdin, *fds)):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    return request["args"]


def run_as_python(args):
    """What `python ARGS` does with a script or `-m module`: sys.argv, sys.path[0], and
    the module run as __main__; its exceptions and exit are the interpreter's own."""
    import runpy

    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        sys.path[0] = os.getcwd()
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(args)
        sys.path[0] = os.path.dirname(os.path.abspath(args[0]))
        runpy.run_path(args[0], run_name="__main__")


def exit_status(e: SystemExit) -> int:
    """What the interpreter makes of SystemExit(code): None is 0, a number itself,
    anything else printed to stderr and 1."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    command = serve(sys.argv[1])
    if command is not None:
        # Ended as the package's scripts end (cli.exit_with), whatever the script: without
        # the teardown of every module, which cost a second of CPU per command.
        from tf_autoencoder.cli import exit_with

        try:
            run_as_python(command)
        except SystemExit as e:
            exit_with(exit_status(e))
        # An uncaught exception (a traceback, Ctrl-C) ends as the interpreter ends it.
        exit_with(0)
