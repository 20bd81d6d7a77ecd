"""Finding image files: an index of a folder by file name, built once per read."""

from __future__ import annotations

import os

from embedstore.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm")


class ImageIndex:
    """File name -> absolute path for every image file under a folder (walked once)."""

    def __init__(self, root: str | None):
        self.root = os.path.abspath(root) if root else None
        self.by_name: dict[str, str] = {}
        if self.root:
            for dirpath, _dirs, files in os.walk(self.root):
                for name in files:
                    if name.lower().endswith(IMAGE_EXTENSIONS):
                        self.by_name.setdefault(name, os.path.join(dirpath, name))

    def __len__(self) -> int:
        return len(self.by_name)

    def find(self, image_id: str) -> str | None:
        """The file named exactly `image_id`, else `image_id` plus an image extension (.png first)."""
        if image_id in self.by_name:
            return self.by_name[image_id]
        for ext in IMAGE_EXTENSIONS:
            hit = self.by_name.get(image_id + ext)
            if hit:
                return hit
        return None


def check_images_dir(images: str | None) -> str | None:
    if images is None:
        return None
    if not os.path.isdir(images):
        raise InputError(f"--images {images}: no such folder; give the folder that holds the image files")
    return os.path.abspath(images)
