"""The one error type for bad input, so every message names the file, key and modality at fault."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data: a corrupt file, a missing modality, a wrong shape, dtype or range.

    Args:
        message: what is wrong, in words.
        modality: the modality name at fault, if known.
        key: the sample key (WebDataset ``__key__``) at fault, if known.
        file: the file (shard path or file name) at fault, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        modality: str | None = None,
        key: str | None = None,
        file: str | None = None,
    ) -> None:
        self.message = message
        self.modality = modality
        self.key = key
        self.file = file
        where = [
            f"{label}={value!r}"
            for label, value in (("file", file), ("key", key), ("modality", modality))
            if value is not None
        ]
        super().__init__(f"{message} [{', '.join(where)}]" if where else message)

    def located(
        self, *, modality: str | None = None, key: str | None = None, file: str | None = None
    ) -> DataError:
        """A copy of this error with missing location fields filled in (known ones are kept)."""
        return DataError(
            self.message,
            modality=self.modality or modality,
            key=self.key or key,
            file=self.file or file,
        )
