"""Download the paper's 15 actual images into data/paper15/ (git-ignored), for `dataset=paper15`.

Shirahama et al. (2025) published the 15 actual images they analyse in the `data/` folder of
their GitHub repository. They are not bundled with fsa, so this script fetches them once:

    python scripts/download_paper15.py [--out data/paper15] [--source URL_OR_FOLDER] [--force]

`--source` is the folder the 15 files are read from: the repository's raw-file URL by default,
or a `file://` URL or a plain local folder (a copy made elsewhere, or a test's stand-in). Only the
standard library fetches (no extra dependency); PIL checks that each file is a readable image.
Each file is written under a temporary name and renamed when complete and verified, so an
interrupted run never leaves a half-written image that a later run would skip as present.
"""

import argparse
import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from PIL import Image, UnidentifiedImageError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "data" / "paper15"
DEFAULT_SOURCE = (
    "https://raw.githubusercontent.com/KimiakiShirahama/FeatureSpaceAnalysisByGuidedDiffusionModel/main/data/"
)
# The 15 actual images of the paper, as named in the authors' repository.
PAPER15_FILES = (
    "160490.jpg",
    "165_jeep.jpg",
    "176904.jpg",
    "277592.jpg",
    "2_junco.jpg",
    "300239.jpg",
    "392_zucchini.jpg",
    "393277.jpg",
    "415_burrito.jpg",
    "437028.jpg",
    "4784_pirate.jpg",
    "586_tusker.jpg",
    "bench2.png",
    "og_img_0.png",
    "photo-1583445095369-9c651e7e5d34.png",
)
_USER_AGENT = "fsa-download-paper15/1.0 (urllib)"


class DownloadError(Exception):
    """The images could not all be fetched and verified; the message says what failed and what to do."""


def _source_url(source: str) -> str:
    """A folder URL ending in '/': http(s) and file URLs pass through, a plain path becomes a file URL.

    A local folder is checked now, so a typo fails with its name rather than 15 'file not found'.
    """
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme in ("http", "https", "file"):
        url = source
        folder = Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path)) if scheme == "file" else None
    else:
        folder = Path(source).expanduser().resolve()
        url = folder.as_uri()
    if folder is not None and not folder.is_dir():
        raise DownloadError(f"source folder '{folder}' does not exist (from --source {source})")
    return url if url.endswith("/") else url + "/"


def _manual_hint(out: Path) -> str:
    return (
        f"Without network, copy the paper's 15 images ({', '.join(PAPER15_FILES)}) by hand into {out}, "
        "or use a folder that has them with dataset=paper15 dataset.root=/path/to/images."
    )


def _fetch(url: str, dest: Path, timeout: float) -> None:
    """Stream one URL into dest. Raises urllib/OS/http.client errors as they come."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response, dest.open("wb") as handle:
        shutil.copyfileobj(response, handle)


def _check_image(path: Path) -> None:
    """Decode the whole file: a truncated download or an HTML error page must not pass as an image."""
    with Image.open(path) as image:
        image.load()


def _is_missing_file(error: urllib.error.URLError) -> bool:
    """A file:// source that lacks one file: a per-file problem, not a connection failure."""
    return isinstance(error.reason, FileNotFoundError)


def download(source: str, out: Path, force: bool = False, timeout: float = 20.0) -> list[Path]:
    """Fetch the 15 images from `source` into `out`; return the 15 paths in `out`.

    Files already in `out` are kept (not re-fetched, not re-checked) unless `force`. A connection
    failure (no network, refused, timeout) stops at once, since every other file would fail the
    same way, each after its own timeout. A per-file problem (HTTP error, missing file, not an
    image) is noted and the other files still come; all are then reported in one DownloadError.
    Either way nothing partial is left in `out`: only complete, verified images are renamed in,
    and an output folder this call created is removed again if it stays empty.
    """
    out = Path(out).expanduser()
    base = _source_url(source)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    failed: list[str] = []
    try:
        for name in PAPER15_FILES:
            dest = out / name
            if dest.exists() and not force:
                continue
            url = base + urllib.parse.quote(name)
            handle, tmp_name = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".part")
            os.close(handle)
            tmp = Path(tmp_name)
            try:
                _fetch(url, tmp, timeout)
                _check_image(tmp)
                os.replace(tmp, dest)
                saved.append(dest)
            except urllib.error.HTTPError as error:
                error.close()
                failed.append(f"{name}: HTTP {error.code} {error.reason} from {url}")
            except urllib.error.URLError as error:
                if not _is_missing_file(error):
                    raise DownloadError(f"cannot reach {url}: {error.reason}. {_manual_hint(out)}") from error
                failed.append(f"{name}: not found at {url}")
            except (UnidentifiedImageError, SyntaxError, ValueError) as error:
                failed.append(f"{name}: not a readable image ({error}) from {url}")
            except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
                what = "timed out" if isinstance(error, TimeoutError) else f"failed ({error!r})"
                raise DownloadError(f"download of {url} {what}. {_manual_hint(out)}") from error
            except OSError as error:  # PIL reports a truncated image as OSError; so does a full disk
                failed.append(f"{name}: {error}")
            finally:
                tmp.unlink(missing_ok=True)
    finally:
        if created and not any(out.iterdir()):
            out.rmdir()
    if failed:
        raise DownloadError(
            f"{len(failed)} of {len(PAPER15_FILES)} images failed ({len(saved)} saved in {out}):\n  "
            + "\n  ".join(failed)
            + f"\n{_manual_hint(out)}"
        )
    return [out / name for name in PAPER15_FILES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to save into (default: %(default)s)")
    parser.add_argument(
        "--source", default=DEFAULT_SOURCE, help="folder URL (http, https, file) or local folder to read the 15 from"
    )
    parser.add_argument("--force", action="store_true", help="fetch again files that are already present")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per request (default: %(default)s)")
    args = parser.parse_args(argv)

    present = sum((args.out / name).exists() for name in PAPER15_FILES) if not args.force else 0
    try:
        paths = download(args.source, args.out, force=args.force, timeout=args.timeout)
    except DownloadError as error:
        print(f"download_paper15: error: {error}", file=sys.stderr)
        return 1
    fetched = len(paths) - present
    print(f"paper15: {len(paths)} images in {args.out} ({fetched} downloaded, {present} already present)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
