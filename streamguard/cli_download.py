"""`streamguard download`'s work: fetch a checkpoint's archive into the output folder with a
progress bar, verify its sha256 and size (`streamguard.remote.download_verified`), then keep
the archive or unpack its `model/` folder so the files lie directly in the folder (loadable with
`from_pretrained`). A failed download leaves nothing behind that it made.

The command and its flags are in `streamguard/cli_remote.py`.
"""

from __future__ import annotations

import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamguard.errors import StreamGuardError
from streamguard.remote import VerificationFailed, download_verified, request

if TYPE_CHECKING:  # imported where used: `streamguard --help` stays fast
    import httpx


def fetch_checkpoint(client: httpx.Client, job: str, name: str, out: Path, *,
                     expect_sha256: str | None, progress: bool
                     ) -> tuple[dict[str, Any], str, Path]:
    """Stream checkpoint `name` of `job` to a partial file in `out` (made if missing) and verify
    it; (its listing, the sha256 it matched, the partial file).

    Raises:
        StreamGuardError: the job has no such checkpoint (the message lists those it has).
        VerificationFailed: the archive does not match (deleted; `out` too if made and empty).
    """
    items = request(client, "GET", f"/v1/jobs/{job}/checkpoints")["items"]
    chosen = next((c for c in items if c["name"] == name), None)
    if chosen is None:
        have = ", ".join(c["name"] for c in items) or "none yet"
        raise StreamGuardError(f"job {job} has no checkpoint {name!r} "
                               f"(it has: {have})", field="checkpoint")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    expected = (expect_sha256 or chosen["sha256"]).lower()
    partial = out / f".{job}-{chosen['name']}.tar.gz.partial"
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=chosen["size_bytes"], unit="B", unit_scale=True, file=sys.stderr,
                   desc=f"{chosen['name']}.tar.gz")
    try:
        download_verified(client, f"/v1/jobs/{job}/checkpoints/{chosen['name']}/"
                          "download", partial, sha256=expected, size=chosen["size_bytes"],
                          on_bytes=bar.update if bar is not None else lambda _n: None)
    except VerificationFailed as exc:
        if created and not any(out.iterdir()):
            out.rmdir()
        if expect_sha256:
            raise
        raise VerificationFailed(exc.message + " (if the job is still running, its "
                                 "checkpoint may have been replaced meanwhile: run the "
                                 "command again)") from None
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # leave nothing behind that we made
        raise
    finally:
        if bar is not None:
            bar.close()
    return chosen, expected, partial


def place_checkpoint(partial: Path, out: Path, *, job: str, name: str, archive: bool,
                     force: bool) -> str:
    """The verified `partial` kept as `out/JOB-NAME.tar.gz` (`archive`) or its model unpacked
    into `out`; where it went, for the report. `partial` is gone afterwards either way."""
    try:
        if archive:
            target = out / f"{job}-{name}.tar.gz"
            partial.replace(target)
            return str(target)
        entries = extract_model(partial, out, force=force)
        return f"{out} ({', '.join(entries)})"
    finally:
        partial.unlink(missing_ok=True)


def extract_model(archive: Path, out: Path, *, force: bool) -> list[str]:
    """Unpack the archive's `model/` folder into `out` (files directly in it); the names."""
    with tempfile.TemporaryDirectory(dir=out, prefix=".extract-") as tmp:
        with tarfile.open(archive, mode="r:gz") as tar:
            names = tar.getnames()
            if not names or not all(n == "model" or n.startswith("model/") for n in names):
                raise StreamGuardError(f"unexpected archive layout (not under model/): "
                                       f"{names[:5]}")
            tar.extractall(tmp, filter="data")
        model = Path(tmp) / "model"
        entries = sorted(p.name for p in model.iterdir())
        clashes = [n for n in entries if (out / n).exists()]
        if clashes and not force:
            raise StreamGuardError(f"{out} already has {', '.join(clashes[:5])}; pass --force "
                                   "to replace them, or choose another --out")
        for name in entries:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            (model / name).replace(target)
    return entries

