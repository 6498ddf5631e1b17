"""Published checkpoints recognised by their files, not by shape or name: a claim about one model's own heads (the
paper's numbers for OpenAI's GPT-2 small) applies only to those weights, not to another checkpoint of the same shape
(a replication trained with another seed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

PUBLISHED = {
    (548_105_171, "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707"): "openai-community/gpt2",
}
"""(size in bytes, SHA-256) of a checkpoint's single model.safetensors -> the published model it is. GPT-2 small: the
hub's model.safetensors of openai-community/gpt2 (revision 607a30d783dfa663caf39e06633721c8d4cfcd7e), whose LFS
object id is its SHA-256."""
PUBLISHED_ATTRIBUTE = "_mechclaims_published"
"""Set on a loaded Hugging Face model to the published name its files matched (read by capabilities_of)."""


def published_name(folder: Path) -> str:
    """The published model whose weights `folder` holds, byte for byte, else "" (only a file of a known size is
    hashed)."""
    files = sorted(folder.glob("*.safetensors"))
    if len(files) != 1:
        return ""
    size = files[0].stat().st_size
    if not any(known == size for known, _ in PUBLISHED):
        return ""
    digest = hashlib.sha256()
    with files[0].open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return PUBLISHED.get((size, digest.hexdigest()), "")
