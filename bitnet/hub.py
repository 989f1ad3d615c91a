"""Models on the Hugging Face Hub: ``hf://`` names for ``-m`` / ``bitnet.load`` and ``bitnet pull``.

Every transfer goes through huggingface_hub, so its cache (``HF_HOME`` / ``HF_HUB_CACHE``), resumed
downloads, ``HF_TOKEN``, ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` behave as in every other tool that
uses it. This module only decides what to fetch (one GGUF file, or a checkpoint's config, weights
and tokenizer) and turns the library's exceptions into one-line errors naming the repository, the
file and the remedy.

    hf://OWNER/NAME                 the repo's only GGUF file, else its checkpoint
    hf://OWNER/NAME/PATH/FILE.gguf  that file
    hf://OWNER/NAME@REVISION/...    a branch, tag or commit (default: main)
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

SCHEME = "hf://"
# What a checkpoint download fetches: what a conversion reads, never the other weight formats
# (.bin, .pt, .onnx, GGUF) or training states a repo may also hold.
CHECKPOINT_PATTERNS = ("config.json", "generation_config.json", "*.safetensors",
                       "*.safetensors.index.json", "tokenizer.json", "tokenizer.model",
                       "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                       "chat_template.jinja")
_QUOTED = 12  # file names an error message lists at most


class HubError(ValueError):
    """A hub look-up or download failed; the message names the cause and what to do.

    A ValueError, like core's file errors, so the CLI prints it as one line."""


@dataclass(frozen=True)
class Pulled:
    """What ``pull`` fetched: one GGUF file, or a checkpoint's snapshot directory."""

    repo: str
    revision: str | None  # as asked; None means the default branch
    kind: str  # "gguf" or "checkpoint"
    path: Path  # the GGUF file, or the checkpoint directory (config.json, *.safetensors, ...)
    files: tuple[str, ...]  # the repo paths now in the cache


def is_hub_uri(spec: object) -> bool:
    return isinstance(spec, str) and spec.startswith(SCHEME)


def resolve_model(spec: str | os.PathLike[str], progress: bool | None = None) -> Path:
    """The local path a model argument (``-m``, ``bitnet.load``) names: an ``hf://`` URI is fetched
    through the hub cache first (a GGUF file, or a checkpoint directory); anything else is a path.
    """
    text = os.fspath(spec)
    path = pull(text, progress=progress).path if is_hub_uri(text) else Path(text).expanduser()
    if path.is_dir():
        raise ValueError(f"{path} is a directory (a Hugging Face checkpoint?): bitnet runs GGUF "
                         f"files, and converting a checkpoint is not supported in this version")
    return path


def parse_repo(repo: str, filename: str | None = None) -> tuple[str, str | None, str | None]:
    """``hf://OWNER/NAME[@REV][/FILE]`` or ``OWNER/NAME[@REV]`` (plus an optional separate FILE)
    -> (repo id, revision or None, file or None)."""
    from huggingface_hub import parse_hf_uri
    from huggingface_hub.errors import HfUriError

    uri = repo if is_hub_uri(repo) else SCHEME + repo
    try:
        parsed = parse_hf_uri(uri)
    except HfUriError as e:
        raise HubError(f"{repo!r} is not a model repository name: {e}") from None
    if parsed.type != "model":
        raise HubError(f"{repo}: bitnet fetches model repositories, not a {parsed.type}")
    path = parsed.path_in_repo or None
    if path and filename:
        raise HubError(f"{repo} already names a file ({path}); drop the extra {filename!r}")
    return parsed.id, parsed.revision, path or filename


def pull(repo: str, filename: str | None = None, revision: str | None = None,
         progress: bool | None = None) -> Pulled:
    """Fetch a model into the hub cache (or find it there) and say where it is.

    With a file: that file. Without: the repo's GGUF file when it holds exactly one (several is
    an error listing them), else its checkpoint (config.json, safetensors, tokenizer files).
    progress: huggingface_hub's progress bars (None: only on a terminal)."""
    repo_id, uri_revision, filename = parse_repo(repo, filename)
    if uri_revision and revision and uri_revision != revision:
        raise HubError(f"{repo} names revision {uri_revision!r} but --revision is {revision!r}")
    revision = revision or uri_revision
    with _progress_bars(progress), _one_line_errors(repo_id, revision, filename):
        if filename is not None:
            return _pull_file(repo_id, revision, filename)
        files = list_files(repo_id, revision)
        ggufs = [f for f in files if f.lower().endswith(".gguf")]
        if len(ggufs) == 1:
            return _pull_file(repo_id, revision, ggufs[0])
        if ggufs:
            raise HubError(f"{repo_id} holds {len(ggufs)} GGUF files; name one, e.g. "
                           f"`bitnet pull {repo_id} {ggufs[0]}` or hf://{repo_id}/{ggufs[0]}: "
                           f"{_quote(ggufs)}")
        if "config.json" in files and any(f.endswith(".safetensors") for f in files):
            return _pull_checkpoint(repo_id, revision)
        raise HubError(f"{repo_id} holds no GGUF file and no checkpoint (config.json + "
                       f"*.safetensors); its files: {_quote(files)}")


def list_files(repo_id: str, revision: str | None = None) -> list[str]:
    """The repo's file paths: from the hub, or when offline / unreachable, what the cache holds
    (LocalEntryNotFoundError if nothing)."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    if not huggingface_hub.is_offline_mode():
        try:
            return huggingface_hub.HfApi().list_repo_files(repo_id, revision=revision)
        except _transport_errors():
            pass  # the network is down: answer from the cache, as hf_hub_download does
    files = cached_files(repo_id, revision)
    if not files:
        raise LocalEntryNotFoundError(f"{repo_id} is not in the cache")
    return files


def cached_files(repo_id: str, revision: str | None = None) -> list[str]:
    """The file paths of ``repo_id`` at ``revision`` (default main) in the hub cache."""
    from huggingface_hub import constants, scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(constants.HF_HUB_CACHE)
    except CacheNotFound:
        return []
    wanted = revision or constants.DEFAULT_REVISION
    for cached in info.repos:
        if cached.repo_id != repo_id or cached.repo_type != "model":
            continue
        for rev in cached.revisions:
            if wanted in rev.refs or rev.commit_hash == wanted:
                return sorted(str(f.file_path.relative_to(rev.snapshot_path)).replace(os.sep, "/")
                              for f in rev.files)
    return []


def _pull_file(repo_id: str, revision: str | None, filename: str) -> Pulled:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        path = hf_hub_download(repo_id, filename, revision=revision)
    except RemoteEntryNotFoundError:
        raise HubError(f"{repo_id} has no file {filename!r}{_at(revision)}; "
                       f"{_what_it_has(repo_id, revision)}") from None
    kind = "gguf" if filename.lower().endswith(".gguf") else "file"
    return Pulled(repo_id, revision, kind, Path(path), (filename,))


def _pull_checkpoint(repo_id: str, revision: str | None) -> Pulled:
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(repo_id, revision=revision,
                                    allow_patterns=list(CHECKPOINT_PATTERNS)))
    files = tuple(sorted(str(p.relative_to(folder)).replace(os.sep, "/")
                         for p in folder.rglob("*") if p.is_file()))
    return Pulled(repo_id, revision, "checkpoint", folder, files)


def _what_it_has(repo_id: str, revision: str | None) -> str:
    try:
        files = list_files(repo_id, revision)
    except Exception as e:  # the listing only decorates the message; its own failure is quoted
        return f"(listing its files failed too: {type(e).__name__})"
    ggufs = [f for f in files if f.lower().endswith(".gguf")]
    if ggufs:
        return f"its GGUF files: {_quote(ggufs)}"
    return f"its files: {_quote(files)}" if files else "it holds no files"


def _quote(names: list[str]) -> str:
    shown = ", ".join(names[:_QUOTED])
    more = len(names) - _QUOTED
    return f"{shown} (and {more} more)" if more > 0 else (shown or "none")


def _at(revision: str | None) -> str:
    return f" at revision {revision!r}" if revision else ""


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The connection failures huggingface_hub lets through (raised by its HTTP client)."""
    import httpx2  # huggingface_hub's HTTP client

    return (httpx2.TransportError,)


@contextlib.contextmanager
def _progress_bars(enabled: bool | None) -> Iterator[None]:
    """huggingface_hub's bars show on a terminal by default; ``enabled=False`` hides them."""
    from huggingface_hub.utils import (are_progress_bars_disabled, disable_progress_bars,
                                       enable_progress_bars)

    if enabled is not False or are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()


@contextlib.contextmanager
def _one_line_errors(repo_id: str, revision: str | None, filename: str | None) -> Iterator[None]:
    """Re-raise huggingface_hub's failures as HubError with the cause and the remedy."""
    from huggingface_hub import constants, errors

    what = f"hf://{repo_id}" + (f"/{filename}" if filename else "") + _at(revision)
    endpoint = constants.ENDPOINT
    token_set = bool(os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"))
    try:
        yield
    except HubError:
        raise
    except errors.GatedRepoError:
        remedy = ("HF_TOKEN is set, but its account has not been granted access"
                  if token_set else "set HF_TOKEN to a token of an account that has access")
        raise HubError(f"{repo_id} is gated: accept its conditions at {endpoint}/{repo_id}; "
                       f"{remedy}") from None
    except errors.RepositoryNotFoundError:
        hint = "HF_TOKEN's account cannot see it" if token_set else "set HF_TOKEN"
        raise HubError(f"repository {repo_id} not found on {endpoint} (if it is private, "
                       f"{hint})") from None
    except errors.RevisionNotFoundError:
        raise HubError(f"{repo_id} has no revision {revision!r} on {endpoint}") from None
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled) as e:
        raise HubError(_not_cached(what, endpoint, e)) from None
    except errors.HfHubHTTPError as e:
        raise HubError(_http_failure(what, endpoint, e, token_set)) from None
    except _transport_errors() as e:
        raise HubError(f"downloading {what} from {endpoint} failed: {type(e).__name__}: {e} "
                       f"(run the command again to resume)") from None


def _not_cached(what: str, endpoint: str, error: BaseException) -> str:
    from huggingface_hub import constants, is_offline_mode
    from huggingface_hub.errors import IncompleteSnapshotError

    cache = constants.HF_HUB_CACHE
    if is_offline_mode():
        return (f"HF_HUB_OFFLINE is set and {what} is not in the cache ({cache}): fetch it "
                f"once while online (bitnet pull)")
    if isinstance(error, IncompleteSnapshotError):
        return f"{what} is only partly in the cache ({cache}) and {endpoint} cannot be reached"
    return (f"cannot reach {endpoint} and {what} is not in the cache ({cache}): check the "
            f"network, or HF_ENDPOINT")


def _http_failure(what: str, endpoint: str, error: Any, token_set: bool) -> str:
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status == 401:
        if token_set:
            return f"{endpoint} refused HF_TOKEN (401 Unauthorized) for {what}: check the token"
        return f"{endpoint} wants a login for {what} (401 Unauthorized): set HF_TOKEN"
    if status == 403:
        return f"{endpoint} forbids {what} (403): check HF_TOKEN's permissions"
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"fetching {what} from {endpoint} failed: {first}"
