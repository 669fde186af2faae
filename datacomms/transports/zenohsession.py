"""Zenoh sessions for zenoh:// URLs: the optional import, the URL's options,
the session configuration, and one shared session per configuration.

Opening a zenoh session costs a few milliseconds, a handful of threads and, in
peer mode, a listening socket, so every Publisher and Subscriber of one process
that asks for the same configuration shares one session (reference counted;
the last close closes it). Sharing is also what lets a publisher and a
subscriber of one process both use ``listen=tcp/127.0.0.1:PORT``.

Run ``python -m datacomms.transports.zenohsession router [ENDPOINT ...]`` for a
zenoh router through the Python API, for machines without the ``zenohd`` binary.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
import weakref
from types import ModuleType
from typing import Any, NamedTuple, Sequence

from ..errors import DataCommsError
from ..url import parse

# Where a default session looks for a router: zenoh's well-known port, on
# loopback only. Peers find each other through the router's gossip and then
# talk directly, the way ROS 2's zenoh middleware is set up.
DEFAULT_ROUTER = "tcp/127.0.0.1:7447"
MODES = ("peer", "client", "router")


def load() -> ModuleType:
    """The zenoh package, or a DataCommsError naming the extra that installs it."""
    try:
        import zenoh
    except ImportError as exc:
        raise DataCommsError(
            f"zenoh:// needs the eclipse-zenoh package ({exc}); install it with "
            "`pip install 'datacomms[zenoh]'` (or `pip install eclipse-zenoh`)") from None
    return zenoh


class Options(NamedTuple):
    """A zenoh:// URL taken apart: the key expression and the session options."""

    key: str
    mode: str | None  # None: the config file's, else peer
    connect: tuple[str, ...]
    listen: tuple[str, ...]
    config: str | None


def _endpoints(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    return tuple(e.strip() for e in value if e.strip())


def parse_url(url: str, mode: str | None = None, connect: str | Sequence[str] | None = None,
              listen: str | Sequence[str] | None = None, config: str | os.PathLike | None = None) -> Options:
    """Splits 'zenoh://KEY/EXPR?mode=client&connect=tcp/H:P,..&listen=..&config=FILE'.

    Keyword arguments win over the query string. With neither, the session is a
    peer that connects to a router on loopback and listens on an ephemeral
    loopback port, with multicast scouting off.
    """
    u = parse(url)
    if u.scheme != "zenoh":
        raise DataCommsError(f"{url!r} is not a zenoh:// URL")
    key, _, query = u.rest.partition("?")
    key = key.strip("/")
    if not key:
        raise DataCommsError(f"{url!r} has no key expression: expected zenoh://KEY/EXPR")
    params: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        name, sep, value = item.partition("=")
        if not sep or name not in ("mode", "connect", "listen", "config"):
            raise DataCommsError(f"unknown zenoh:// option {item!r} in {url!r}; "
                                 "known: mode=, connect=, listen=, config=")
        params[name] = value
    mode = mode or params.get("mode") or None
    if mode is not None and mode not in MODES:
        raise DataCommsError(f"zenoh mode must be one of {', '.join(MODES)}, not {mode!r}")
    conn = _endpoints(connect) if connect is not None else _endpoints(params.get("connect"))
    lis = _endpoints(listen) if listen is not None else _endpoints(params.get("listen"))
    cfg = os.fspath(config) if config is not None else params.get("config")
    return Options(key, mode, conn, lis, cfg)


def make_config(zenoh: ModuleType, opts: Options) -> Any:
    """A zenoh.Config for these options. A config file is taken as written, with the
    URL's mode, connect and listen over it. Timestamping is left as zenoh's default
    (off) or the file's: publication caches order by sequence numbers instead
    (zenohbus), and a session with timestamping stamps every put, which costs
    each message."""
    if opts.config:
        try:
            cfg = zenoh.Config.from_file(opts.config)
        except Exception as exc:  # zenoh raises its own ZError for unreadable or invalid files
            raise DataCommsError(f"cannot load zenoh config {opts.config!r}: {exc}") from None
        if opts.mode is not None:
            cfg.insert_json5("mode", json.dumps(opts.mode))
    else:
        mode = opts.mode or "peer"
        cfg = zenoh.Config()
        cfg.insert_json5("mode", json.dumps(mode))
        cfg.insert_json5("scouting/multicast/enabled", "false")
        connect = list(opts.connect)
        listen = list(opts.listen)
        if not connect and not listen:
            if mode == "router":
                listen = [DEFAULT_ROUTER]
            else:
                connect = [DEFAULT_ROUTER]
        if mode == "peer" and not listen:
            # Peers that meet through a router connect to each other directly
            # (gossip tells them where); without a listener of their own they can't.
            listen = ["tcp/127.0.0.1:0"]
        cfg.insert_json5("connect/endpoints", json.dumps(connect))
        cfg.insert_json5("listen/endpoints", json.dumps(listen))
        if mode == "peer":
            # A peer whose router is not up yet starts anyway and keeps trying,
            # so start-up order between processes does not matter.
            cfg.insert_json5("connect/exit_on_failure", "false")
            cfg.insert_json5("connect/timeout_ms", "200")
    if opts.config and opts.connect:
        cfg.insert_json5("connect/endpoints", json.dumps(list(opts.connect)))
    if opts.config and opts.listen:
        cfg.insert_json5("listen/endpoints", json.dumps(list(opts.listen)))
    return cfg


_lock = threading.Lock()
_sessions: dict[tuple[Any, ...], list[Any]] = {}  # key -> [session, users]
_changed = threading.Condition(_lock)  # the main thread ended, or the last session closed
_exiting = False   # the main thread ended
_closer: threading.Thread | None = None  # runs _close_at_exit while sessions are open
# The zenoh:// publishers and subscribers, which the exit hook stops before it
# closes their sessions (zenohbus registers each with track_publisher and
# track_subscriber). A publisher has _halt(why, locked) (no send, flush or
# subscriber count calls into zenoh from then on) and _busy() (one is under way).
_publishers: weakref.WeakSet[Any] = weakref.WeakSet()
_subscribers: weakref.WeakSet[Any] = weakref.WeakSet()
EXIT_PUT_WAIT = 5.0  # seconds the exit hook waits for calls under way, before and after the close
_FORK_WHY = (": it was opened before this process was forked, and zenoh's threads do not survive "
             "fork: start such workers with multiprocessing's 'spawn' or 'forkserver' method")
_EXIT_WHY = (": the interpreter is exiting, and datacomms closed its zenoh session once the main "
             "thread and every other non-daemon thread had ended")
# The process that started zenoh's runtime (its first session), if any. zenoh's
# runtime threads do not survive fork: in a child forked after that, a session
# opens but never carries anything, and closing one hangs.
_runtime_pid: int | None = None


def _forked() -> None:
    """In a child just forked: the sessions are the parent's and stay its own (the
    exit hook must not close them, which hangs), and the lock may have been held
    by a parent thread that does not exist here. A publisher inherited refuses to
    send (its puts went nowhere, silently), and a subscriber to receive (it
    waited for ever)."""
    global _lock, _changed, _closer
    _lock = threading.Lock()
    _changed = threading.Condition(_lock)
    _closer = None
    _sessions.clear()
    for pub in list(_publishers):
        pub._halt(_FORK_WHY, locked=False)
    for sub in list(_subscribers):
        sub._halt(_FORK_WHY)
    _publishers.clear()
    _subscribers.clear()


os.register_at_fork(after_in_child=_forked)


def _share_key(opts: Options) -> tuple[Any, ...]:
    cfg_id: Any = None
    if opts.config:
        try:
            st = os.stat(opts.config)
            cfg_id = (os.path.abspath(opts.config), st.st_mtime_ns, st.st_size)
        except OSError:
            cfg_id = opts.config
    return (opts.mode, opts.connect, opts.listen, cfg_id)


def _close_at_exit() -> None:
    """Closes the sessions of Publishers and Subscribers never closed, once the main
    thread and then every other thread of the program have ended. zenoh-python runs
    callbacks on threads of its own that the interpreter waits for at exit, and they
    end only with their session, so a session left open kept the process from ever
    exiting. This runs on a thread of its own, not a daemon (the interpreter waits
    for it too, so it is never cut off inside zenoh), which ends early when the last
    session closes."""
    global _closer
    with _lock:
        while not _exiting and _sessions:
            _changed.wait()
        if not _exiting:
            _closer = None
            return
    me, main = threading.current_thread(), threading.main_thread()
    while True:  # the program's own threads go on using their sessions meanwhile
        busy = [t for t in threading.enumerate()
                if t is not me and t is not main and not t.daemon and not t.name.endswith("(pyo3-closure)")]
        if not busy:
            break
        busy[0].join()
    with _lock:
        entries = list(_sessions.values())
        _sessions.clear()
        publishers = list(_publishers)
        subscribers = list(_subscribers)
    # Daemon threads may still send, or count subscribers. No call into zenoh is
    # under way while its session closes, nor once the interpreter finalizes: a
    # daemon thread that comes back out of zenoh then is ended inside Rust code,
    # which aborts the process. So every publisher refuses (a send raises
    # dc.Closed, saying why) before it touches zenoh, the calls under way end
    # first, and any a close cut short is back in Python after.
    for pub in publishers:
        pub._halt(_EXIT_WHY)
    # A subscriber's zenoh thread may wait for room in its full queue or channel (a
    # block-mode publisher, nobody reading any more), and closing its session then
    # waited for it for ever: closing the subscriber lets go of it.
    for sub in subscribers:
        try:
            sub.close()
        except Exception:  # noqa: BLE001  (exiting: nothing left to tell)
            pass
    _wait_idle(publishers)
    for session, _ in entries:
        try:
            session.close()
        except Exception:  # noqa: BLE001  (exiting: nothing left to tell)
            pass
    _wait_idle(publishers)


def _wait_idle(publishers: list[Any]) -> None:
    """Until no publisher has a call into zenoh under way, or EXIT_PUT_WAIT seconds
    (a block-mode put to a stopped subscriber may wait as long as zenoh lets it)."""
    deadline = time.monotonic() + EXIT_PUT_WAIT
    while any(p._busy() for p in publishers) and time.monotonic() < deadline:
        time.sleep(0.001)


def track_publisher(pub: Any) -> None:
    """Registers a publisher, for the exit hook to stop before its session closes."""
    _publishers.add(pub)


def track_subscriber(sub: Any) -> None:
    """Registers a subscriber, for the exit hook to close before its session."""
    _subscribers.add(sub)


def _main_thread_ended() -> None:
    global _exiting
    with _lock:
        _exiting = True
        _changed.notify_all()


# Called when the main thread has ended, before the interpreter joins the other
# threads (concurrent.futures uses the same hook); atexit handlers run only after
# that join. This module is imported only once a zenoh:// URL is used.
getattr(threading, "_register_atexit", atexit.register)(_main_thread_ended)


def acquire(opts: Options) -> tuple[Any, tuple[Any, ...]]:
    """A session for these options (shared within the process) and the key to release it."""
    global _runtime_pid
    zenoh = load()
    key = _share_key(opts)
    with _lock:
        if _runtime_pid is not None and _runtime_pid != os.getpid():
            raise DataCommsError(
                f"zenoh:// cannot be used in a process forked from one that already used zenoh "
                f"(process {_runtime_pid}): zenoh's threads do not survive fork. Start this process "
                "with multiprocessing's 'spawn' or 'forkserver' method, or fork before the first "
                "zenoh:// Publisher or Subscriber")
        entry = _sessions.get(key)
        if entry is None or entry[0].is_closed():
            try:
                _runtime_pid = os.getpid()
                session = zenoh.open(make_config(zenoh, opts))
            except zenoh.ZError as exc:
                raise DataCommsError(f"cannot open a zenoh session ({opts.mode or 'peer'}, connect={list(opts.connect)}, "
                                     f"listen={list(opts.listen)}): {exc}") from None
            entry = _sessions[key] = [session, 0]
            if _closer is None:
                _start_closer()
        entry[1] += 1
        return entry[0], key


def _start_closer() -> None:
    global _closer
    _closer = threading.Thread(target=_close_at_exit, name="datacomms zenoh exit")
    try:
        _closer.start()
    except RuntimeError:  # a thread opening a session while the interpreter shuts down
        _closer = None


def release(key: tuple[Any, ...]) -> None:
    """Drops one user of a shared session, closing it with the last."""
    with _lock:
        entry = _sessions.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _sessions[key]
        _changed.notify_all()
    try:
        entry[0].close()
    except load().ZError:
        # zenoh gives up on a link it cannot flush (a peer that stopped reading)
        # after about 10 s of its own and raises "close operation timed out", with
        # the session closed all the same (docs/zenoh.md, "Closing does not drop the tail")
        pass


def router_main(endpoints: Sequence[str]) -> None:
    """Runs a zenoh router listening on endpoints until stdin closes or SIGTERM."""
    zenoh = load()
    opts = Options("", "router", (), tuple(endpoints) or (DEFAULT_ROUTER,), None)
    session = zenoh.open(make_config(zenoh, opts))
    try:
        print("router", session.zid(), " ".join(opts.listen), flush=True)
        sys.stdin.read()
    finally:
        session.close()


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "router":
        sys.exit("usage: python -m datacomms.transports.zenohsession router [ENDPOINT ...]")
    router_main(sys.argv[2:])
