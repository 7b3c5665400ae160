"""The `pager-actors` command.

    pager-actors run --config FILE            serve until SIGTERM/SIGINT (SIGHUP reloads)
    pager-actors check-config FILE            check a config; one line per problem
    pager-actors test-page --config FILE URI  send one real test message to mailto:/sms:
    pager-actors healthcheck --config FILE    ask the running daemon's /healthz
    pager-actors demo                         one incident in memory: alert, escalation, ack
    pager-actors hash-password                read a password, print its argon2id hash
    pager-actors --version

Exit codes: 0 done; 1 failed while running (a test page not delivered, an
unhealthy daemon, a server that stopped on an error); 2 refused before doing
anything (bad command line, bad config, state file unusable or in use, port in use).
"""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version

from pager_actors.daemon.config import Config, ConfigError, listen_address, load_config
from pager_actors.domain import EmailTarget, mask_target, mask_text, parse_contact
from pager_actors.logs import configure

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def _version() -> str:
    try:
        return version("pager-actors")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pager-actors",
                                     description="On-call alert escalation daemon.",
                                     epilog="Exit codes: 0 done, 1 failed, 2 refused to start.")
    parser.add_argument("--version", action="version", version=f"pager-actors {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start the daemon")
    run.add_argument("--config", required=True, help="path to pager.toml")
    check = commands.add_parser("check-config", help="validate a config: exit 0, or 2")
    check.add_argument("config", help="path to pager.toml")
    page = commands.add_parser("test-page", help="send one test message through the "
                                                 "configured gateway")
    page.add_argument("--config", required=True, help="path to pager.toml")
    page.add_argument("target", help="mailto:ADDRESS or sms:+NUMBER")
    health = commands.add_parser("healthcheck", help="GET the running daemon's /healthz")
    health.add_argument("--config", required=True, help="path to pager.toml")
    health.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS")
    demo = commands.add_parser("demo", help="play one incident in memory: alert, escalation, ack")
    demo.add_argument("--ack-timeout", type=float, default=2.0, metavar="SECONDS")
    commands.add_parser("hash-password", help="read a password (asked on a terminal, else one "
                                              "line of stdin) and print its argon2id hash, "
                                              "for [[users]] password_hash")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return _demo(args.ack_timeout)
    if args.command == "healthcheck":
        return _healthcheck(args.config, args.timeout)
    if args.command == "hash-password":
        return _hash_password()
    try:
        config = load_config(args.config)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_REFUSED
    if args.command == "check-config":
        for warning in config.warnings:
            print(warning, file=sys.stderr)
        print(f"{args.config}: ok ({len(config.services)} services)")
        return EXIT_OK
    if args.command == "test-page":
        return _test_page(config, args.target)
    return _serve(config)


def _serve(config: Config) -> int:
    from pager_actors.daemon.run import StartupRefused, run  # noqa: PLC0415 - heavy imports

    configure()
    try:
        return run(config)
    except StartupRefused as refused:
        print(f"pager-actors: {refused}", file=sys.stderr)
        return EXIT_REFUSED


def _hash_password() -> int:
    """Print an argon2id hash of a password typed twice on a terminal, or of stdin's first
    line (without its line break) when stdin is not a terminal."""
    from pager_actors.console.passwords import MAX_PASSWORD_CHARS, hash_password  # noqa: PLC0415

    if sys.stdin.isatty():
        try:
            password = getpass.getpass("Password: ")
            if getpass.getpass("Again: ") != password:
                print("pager-actors: the two passwords differ; nothing printed", file=sys.stderr)
                return EXIT_REFUSED
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return EXIT_REFUSED
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        print("pager-actors: an empty password cannot log in; nothing printed", file=sys.stderr)
        return EXIT_REFUSED
    if len(password) > MAX_PASSWORD_CHARS:
        print(f"pager-actors: a password has at most {MAX_PASSWORD_CHARS} characters",
              file=sys.stderr)
        return EXIT_REFUSED
    print(hash_password(password))
    return EXIT_OK


def _healthcheck(path: str, timeout: float) -> int:
    """The image's HEALTHCHECK: follows `[server] listen`, whatever port it names."""
    try:
        host, port = listen_address(path)
    except ConfigError as error:
        print(error.problems[0], file=sys.stderr)
        return EXIT_FAILED
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            ok = response.status == 200
    except (urllib.error.URLError, OSError) as error:
        print(f"unhealthy: {url}: {getattr(error, 'reason', error)}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{'healthy' if ok else 'unhealthy'}: {url}")
    return EXIT_OK if ok else EXIT_FAILED


def _test_page(config: Config, uri: str) -> int:
    """Send one real message to `uri` through the configured gateway; say what happened."""
    from pager_actors.daemon.run import mail_sender, sms_sender  # noqa: PLC0415

    try:
        target = parse_contact(uri)
    except ValueError as error:
        print(f"pager-actors: {error}", file=sys.stderr)
        return EXIT_REFUSED
    shown = mask_target(target)
    by_mail = isinstance(target, EmailTarget)
    kind = config.mail.kind if by_mail else config.sms.kind
    if kind == "log":
        print(f"not sent to {shown}: [{'mail' if by_mail else 'sms'}] kind is \"log\", "
              "which only prints messages", file=sys.stderr)
        return EXIT_FAILED
    text = (f"Test page from pager-actors on {socket.gethostname()} at "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}. No action is needed.")
    started = time.monotonic()
    sender = mail_sender(config) if by_mail else sms_sender(config)
    try:
        if isinstance(target, EmailTarget):
            sender.send_mail(target.address, "[pager-actors] test page", text)  # type: ignore[union-attr]
        else:
            sender.send_sms(target.number, text)  # type: ignore[union-attr]
    except Exception as error:
        print(f"failed to send to {shown} via {kind}: {mask_text(str(error) or repr(error))}",
              file=sys.stderr)
        return EXIT_FAILED
    finally:
        close = getattr(sender, "close", None)
        if close is not None:
            close()
    print(f"sent to {shown} via {kind} in {time.monotonic() - started:.2f} s")
    return EXIT_OK


def _demo(ack_timeout: float) -> int:
    """One incident in memory with a real timer: alert, escalation, acknowledgement."""
    from adapters.log import LogMailSender, LogSmsSender  # noqa: PLC0415
    from adapters.memory import InMemoryPolicyRepository  # noqa: PLC0415
    from adapters.timer import ThreadedTimer  # noqa: PLC0415
    from pager_actors._demo import DEMO_POLICY, run_demo  # noqa: PLC0415

    configure()
    with ThreadedTimer() as timer:
        return run_demo(policies=InMemoryPolicyRepository([DEMO_POLICY]), mail=LogMailSender(),
                        sms=LogSmsSender(), timer=timer,
                        ack_timeout=timedelta(seconds=ack_timeout))


if __name__ == "__main__":
    sys.exit(main())
