"""The paper's 15 actual images: where the authors publish them, fetching them, finding them on disk.

The authors' repository keeps them in three folders of its `data/`: `imagenet_data/` (6 ImageNet
images), `mscoco_data/` (6 MSCOCO images, whose captions Fig. 8 uses) and `bansal/` (3 images from the
Universal Guidance repository of Bansal et al.). `fsa-download-paper15` copies them into
`<data_dir>/paper15/` in the same layout and checks each file against its SHA-256; `dataset=paper15`
finds them there (or in any folder, flat or in those subfolders) and names any that are missing.

Light on purpose: standard library and PIL only, so that a download starts at once.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

SOURCE = "https://raw.githubusercontent.com/KimiakiShirahama/FeatureSpaceAnalysisByGuidedDiffusionModel/HEAD/data/"
SUBSETS = {"imagenet": "imagenet_data", "mscoco": "mscoco_data", "bansal": "bansal"}


@dataclass(frozen=True)
class PaperImage:
    name: str
    folder: str  # the authors' subfolder of data/
    sha256: str


IMAGES = (
    PaperImage("165_jeep.jpg", "imagenet_data", "0f02b551c1c47e7de3b9ec4809cb254cb52cde1bdb307ecd90e5dc6269603497"),
    PaperImage("2_junco.jpg", "imagenet_data", "70f7155039fb643c6f18e0cf15cfe984da3d7ef3e7b3a86c8efb57987e0df5c0"),
    PaperImage("392_zucchini.jpg", "imagenet_data", "9a3da8a025680c07555200d30fa1b117622a19cb1c1fcb3c885e0a55dd35a71c"),
    PaperImage("415_burrito.jpg", "imagenet_data", "0f333faa11324c095385bb2289e08c8d73eb027183e8688efcec578d170ae304"),
    PaperImage("4784_pirate.jpg", "imagenet_data", "386b61ae99bc7a9ea2785d5cf5d0deb8b78ccd2a145af0bee71034ff762a4499"),
    PaperImage("586_tusker.jpg", "imagenet_data", "447dda59266495a1783866bd22e6e13a4e102d367a14ef460444207108544c46"),
    PaperImage("160490.jpg", "mscoco_data", "1dbb7b55a0077c903782cffa3283e32d8786c5ae6934be16bc16dfdde8a1ef80"),
    PaperImage("176904.jpg", "mscoco_data", "21346eacddcd45c08a460d7e800d92924903f75d2f0a215a08b93e0cb924649a"),
    PaperImage("277592.jpg", "mscoco_data", "deccd3c1f103084bbb6d333e44af593cbd059516e479df87fa913debd265fb39"),
    PaperImage("300239.jpg", "mscoco_data", "60ce7c1bbc11235bbeedb07aa9e5f6e79909a984ade4916c2bc34519ccbc7bff"),
    PaperImage("393277.jpg", "mscoco_data", "e33f009a0464c4f343aae10834d68c444d4ac36f344f169a0c85ca4430908574"),
    PaperImage("437028.jpg", "mscoco_data", "02afd013e79b3cf0045a71cc79d6accce046ff932120f0b93eebf4c4a247447a"),
    PaperImage("bench2.png", "bansal", "406cb077ea0c1133f8315e52b2ee9388a32bbc7e3273095be2166e5834123c84"),
    PaperImage("og_img_0.png", "bansal", "8269d6e2de1eecc09e98e20d661945b82ac7d4aa0ef2ccae81530ac778dffded"),
    PaperImage(
        "photo-1583445095369-9c651e7e5d34.png",
        "bansal",
        "83772032257563ff7e462cc80b056d6e2e0b9e3dc1eb5f3f1894849ee5129304",
    ),
)
HOW_TO_GET = "fetch them with `fsa-download-paper15`, or pass a folder that has them: dataset.root=/path/to/images"
_USER_AGENT = "fsa-download-paper15/2.0 (urllib)"


class DownloadError(Exception):
    """The images could not all be fetched and checked; the message says what failed and what to do."""


def images(subset: str | None = None) -> tuple[PaperImage, ...]:
    """All 15 in the authors' order (ImageNet, MSCOCO, Bansal et al.), or one subset of them."""
    if subset is None:
        return IMAGES
    if subset not in SUBSETS:
        raise ValueError(f"paper15 subset must be one of {tuple(SUBSETS)} or null, got '{subset}'")
    return tuple(image for image in IMAGES if image.folder == SUBSETS[subset])


def locate(root: Path, wanted: tuple[PaperImage, ...]) -> tuple[list[Path], list[PaperImage]]:
    """The files of `wanted` under `root` (in the authors' subfolders, or directly in it), and those not found."""
    found, missing = [], []
    for image in wanted:
        path = next((p for p in (root / image.folder / image.name, root / image.name) if p.is_file()), None)
        if path is None:
            missing.append(image)
        else:
            found.append(path)
    return found, missing


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _base(source: str) -> tuple[str, bool]:
    """The source folder as a URL ending in '/', and whether it is local (a flat copy is then allowed)."""
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        return (source if source.endswith("/") else source + "/"), False
    folder = Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path)) if scheme == "file" else None
    folder = (folder or Path(source)).expanduser().resolve()
    if not folder.is_dir():
        raise DownloadError(f"source folder '{folder}' does not exist (from --source {source})")
    return folder.as_uri() + "/", True


def _fetch(url: str, dest: Path, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response, dest.open("wb") as handle:
        shutil.copyfileobj(response, handle)


def _check(path: Path, image: PaperImage, verify: bool) -> None:
    """Decode the whole file (a truncated download or an HTML error page is no image), then its checksum."""
    with Image.open(path) as opened:
        opened.load()
    if verify and sha256(path) != image.sha256:
        raise ValueError(f"its SHA-256 is {sha256(path)}, not the paper's {image.sha256} (--no-verify to accept it)")


def download(source: str, root: Path, force: bool = False, timeout: float = 20.0, verify: bool = True) -> list[Path]:
    """Fetch the 15 images from `source` (the authors' `data/` folder, or a copy of it, flat or not) into
    `root/<subfolder>/<name>`; return their paths in the authors' order.

    Files already under `root` are kept unless `force`. A connection failure stops at once (every other
    file would fail the same way, each after its own timeout); a per-file problem (HTTP error, missing
    file, not an image, wrong checksum) is noted, the other files still come, and all are reported in
    one DownloadError. Only complete, checked files are renamed into place.
    """
    root = Path(root).expanduser()
    base, local = _base(source)
    failed: list[str] = []
    for image in IMAGES:
        dest = root / image.folder / image.name
        if not force and locate(root, (image,))[0]:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{image.name}.", suffix=".part")
        os.close(handle)
        tmp = Path(tmp_name)
        urls = [base + urllib.parse.quote(f"{image.folder}/{image.name}")]
        urls += [base + urllib.parse.quote(image.name)] if local else []
        try:
            for url in urls:
                try:
                    _fetch(url, tmp, timeout)
                    break
                except urllib.error.URLError as error:
                    if not isinstance(error.reason, FileNotFoundError) or url == urls[-1]:
                        raise
            _check(tmp, image, verify)
            os.replace(tmp, dest)
        except urllib.error.HTTPError as error:
            error.close()
            failed.append(f"{image.name}: HTTP {error.code} {error.reason} from {urls[0]}")
        except urllib.error.URLError as error:
            if not isinstance(error.reason, FileNotFoundError):
                raise DownloadError(f"cannot reach {urls[0]}: {error.reason}. {_by_hand(root)}") from None
            failed.append(f"{image.name}: not found in {source}")
        except (UnidentifiedImageError, SyntaxError, ValueError) as error:
            failed.append(f"{image.name}: not the paper's image ({error})")
        except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
            what = "timed out" if isinstance(error, TimeoutError) else f"failed ({error!r})"
            raise DownloadError(f"download of {urls[0]} {what}. {_by_hand(root)}") from None
        except OSError as error:  # PIL says OSError for a truncated image; so does a full disk
            failed.append(f"{image.name}: {error}")
        finally:
            tmp.unlink(missing_ok=True)
    for folder in {root / image.folder for image in IMAGES}:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # nothing came into a folder this call made
    if failed:
        saved = len(IMAGES) - len(failed)
        raise DownloadError(
            f"{len(failed)} of {len(IMAGES)} images failed ({saved} in {root}): "
            + "; ".join(failed)
            + f". {_by_hand(root)}"
        )
    return locate(root, IMAGES)[0]


def _by_hand(root: Path) -> str:
    return (
        f"Without network, copy the 15 images ({', '.join(image.name for image in IMAGES)}) into {root} "
        "(flat or in the authors' subfolders), or pass a folder that has them: dataset.root=/path/to/images"
    )
