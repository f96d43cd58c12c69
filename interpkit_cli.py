"""The ``interpkit`` console script. It lives outside the package so that Ctrl-C while torch and
interpkit are still importing (the first seconds) also ends with one line and exit code 130: the
interrupt is noted during the imports (some libraries' imports swallow a KeyboardInterrupt) and
acted on once they are done."""

import signal
import sys

INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def main() -> int:
    noted = []
    signal.signal(signal.SIGINT, lambda *_: noted.append(True))
    try:
        from interpkit.cli.main import main as run
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if noted:
        print("interpkit: interrupted", file=sys.stderr)
        return INTERRUPTED
    try:
        return run()
    except KeyboardInterrupt:  # between the parser and the command's own handler
        print("interpkit: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
