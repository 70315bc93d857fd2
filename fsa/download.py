"""`fsa-download-paper15`: the paper's 15 actual images into <data_dir>/paper15, `data_dir` as fsa's
config gives it (a local config included), so that `dataset=paper15` finds them with no path to pass."""

import argparse
import sys
from pathlib import Path

from fsa.config import compose_config
from fsa.data.paper15 import IMAGES, SOURCE, DownloadError, download, locate


def configured_root() -> Path:
    """<data_dir>/paper15, with `data_dir` read from fsa's composed config."""
    return Path(compose_config().data_dir).expanduser() / "paper15"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fsa-download-paper15", description="Fetch the paper's 15 actual images into <data_dir>/paper15."
    )
    parser.add_argument("--root", type=Path, default=None, help="folder to save into (default: <data_dir>/paper15)")
    parser.add_argument("--source", default=SOURCE, help="the authors' data/ folder: a URL, or a local copy of it")
    parser.add_argument("--force", action="store_true", help="fetch again files that are already present")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per request (default: %(default)s)")
    parser.add_argument("--no-verify", action="store_true", help="accept files whose SHA-256 differs from the paper's")
    args = parser.parse_args(argv)
    root = args.root or configured_root()
    present = 0 if args.force else len(locate(root, IMAGES)[0])
    try:
        paths = download(args.source, root, force=args.force, timeout=args.timeout, verify=not args.no_verify)
    except DownloadError as error:
        print(f"fsa-download-paper15: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # the folder cannot be made or written: the user's to fix
        where = error.filename or root
        print(f"fsa-download-paper15: error: cannot write {where} ({error.strerror}); choose --root", file=sys.stderr)
        return 2
    print(f"paper15: {len(paths)} images in {root} ({len(paths) - present} downloaded, {present} already present)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
