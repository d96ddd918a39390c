"""Content-addressed copies of originals, page renders and thumbnails under the store directory.

Results must still show a thumbnail and open the original after the source folder moves, so
every ImageNode's ``image_path`` points into this store, never at the user's folder.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from PIL import Image


class BlobStore:
    """Content-addressed files under ``root``: ``<kind>/<key[:2]>/<key><suffix>``, written atomically
    once (a second write of the same key is a no-op).

    Args:
        root: the folder (``<store>/blobs``).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def temporary(cls) -> "BlobStore":
        """For readers used on their own, outside a pipeline."""
        return cls(Path(tempfile.gettempdir()) / "mmrag-blobs")

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / key[:2] / f"{key}{suffix}"

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, src: str | Path, key: str) -> str:
        """Copy an original once; the key is its content hash so a second copy is a no-op.

        Args:
            src: the file to copy.
            key: its content hash.
        """
        src = Path(src)
        dst = self._path("originals", key, src.suffix.lower())
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".tmp-{dst.name}")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        return str(dst)

    def put_bytes(self, data: bytes, key: str, suffix: str = ".png", kind: str = "renders") -> str:
        """Store ``data``; returns its path.

        Args:
            data: the bytes.
            key: a content key.
            suffix: the file suffix.
            kind: the sub-folder (``renders``, ``originals``, ...).
        """
        dst = self._path(kind, key, suffix)
        if not dst.exists():
            self._atomic_write(dst, data)
        return str(dst)

    def put_image(self, image: Image.Image, key: str, kind: str = "renders", fmt: str = "PNG") -> str:
        """Store an image encoded as ``fmt``; returns its path.

        Args:
            image: the image.
            key: a content key.
            kind: the sub-folder.
            fmt: a Pillow format name.
        """
        dst = self._path(kind, key, "." + fmt.lower())
        if not dst.exists():
            buf = io.BytesIO()
            image.save(buf, format=fmt)
            self._atomic_write(dst, buf.getvalue())
        return str(dst)

    def thumbnail(self, image: Image.Image, key: str, max_px: int = 256) -> str:
        """Store a JPEG thumbnail (longer side ``max_px``); returns its path.

        Args:
            image: the image.
            key: a content key.
            max_px: the longer side of the thumbnail.
        """
        dst = self._path("thumbs", key, ".jpg")
        if not dst.exists():
            thumb = image.convert("RGB").copy()
            thumb.thumbnail((max_px, max_px))
            buf = io.BytesIO()
            thumb.save(buf, format="JPEG", quality=85)
            self._atomic_write(dst, buf.getvalue())
        return str(dst)

    def exists(self, path: Optional[str]) -> bool:
        """Whether ``path`` (a stored blob path, or None) exists.

        Args:
            path: a path returned by this store, or None.
        """
        return bool(path) and Path(path).exists()  # type: ignore[arg-type]
