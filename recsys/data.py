"""Ratings data: loaders for MovieLens and generic CSV files, and a seeded synthetic population.

Every loader returns a :class:`Ratings`: parallel arrays over interactions with users and
items remapped densely to ``0..n-1`` (raw ids kept for display), plus **public** item
metadata (genres, release year) when a metadata file sits beside the ratings. The format of
a ratings file is read from its content (delimiter, header row, 3 or 4 columns), never from
its name. Parsing is strict: a malformed row is a :class:`~recsys.errors.DataFormatError`
naming the file, the 1-based line and the cause, never a silent skip. Exact duplicate rows
(same user, item, rating and timestamp) are dropped with a :class:`DuplicateRowsWarning`
and counted in :attr:`Ratings.duplicates_dropped`.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from recsys.errors import ConfigError, DataFormatError, DataNotFoundError

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

__all__ = ["DuplicateRowsWarning", "Ratings", "load_ratings", "synthetic_ratings"]


class DuplicateRowsWarning(UserWarning):
    """A ratings file repeats rows exactly; the repeats were dropped (counted in the data)."""


@dataclass(frozen=True, eq=False)
class Ratings:
    """Interactions ``(users[k], items[k], ratings[k], timestamps[k])`` with dense ids.

    ``item_genres`` (num_items × G, 0/1) and ``item_years`` (float, NaN when unknown) are
    public item metadata; ``synthetic`` is True for generated data, and ``source`` says
    where the data came from (a path, or the generator's parameters). ``has_timestamps`` is
    False when the file had no timestamp column (every timestamp is then 0, and no temporal
    split can be made); ``duplicates_dropped`` counts exact duplicate rows the loader dropped.
    """

    users: IntArray
    items: IntArray
    ratings: FloatArray
    timestamps: IntArray
    num_users: int
    num_items: int
    source: str
    synthetic: bool = False
    has_timestamps: bool = True
    user_ids: NDArray[np.str_] = field(default_factory=lambda: np.array([], dtype=str))
    item_ids: NDArray[np.str_] = field(default_factory=lambda: np.array([], dtype=str))
    item_genres: FloatArray | None = None
    genre_names: tuple[str, ...] = ()
    item_years: FloatArray | None = None
    duplicates_dropped: int = 0

    def __post_init__(self) -> None:
        n = len(self.users)
        if not (len(self.items) == len(self.ratings) == len(self.timestamps) == n):
            raise ConfigError("users, items, ratings and timestamps must have equal length")
        if n and (self.users.min() < 0 or self.users.max() >= self.num_users):
            raise ConfigError("user ids must lie in [0, num_users)")
        if n and (self.items.min() < 0 or self.items.max() >= self.num_items):
            raise ConfigError("item ids must lie in [0, num_items)")
        if self.item_genres is not None and self.item_genres.shape[0] != self.num_items:
            raise ConfigError("item_genres must have one row per item")
        if self.item_years is not None and self.item_years.shape != (self.num_items,):
            raise ConfigError("item_years must have one entry per item")

    @property
    def num_ratings(self) -> int:
        """Number of interactions."""
        return len(self.users)

    @property
    def label(self) -> str:
        """A one-line description that always says whether the data is synthetic."""
        kind = "SYNTHETIC" if self.synthetic else "real"
        return (
            f"{self.source} ({kind}: {self.num_users} users, {self.num_items} items, "
            f"{self.num_ratings} ratings)"
        )


# ----------------------------------------------------------------------------- parsing helpers


@dataclass
class _Parsed:
    users: list[str]
    items: list[str]
    ratings: list[float]
    stamps: list[int]
    linenos: list[int]
    has_timestamps: bool


def _parse_rows(
    path: str,
    lines: Iterable[tuple[int, Sequence[str]]],
    *,
    need_timestamp: bool,
) -> _Parsed:
    linenos: list[int] = []
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    stamps: list[int] = []
    has_ts = need_timestamp
    first = True
    for lineno, fields in lines:
        if first:
            has_ts = need_timestamp or len(fields) >= 4
            first = False
        expected = 4 if has_ts else 3
        if len(fields) != expected:
            raise DataFormatError(
                path,
                lineno,
                f"expected {expected} fields (user,item,rating"
                f"{',timestamp' if has_ts else ''}), got {len(fields)}",
            )
        user, item = fields[0].strip(), fields[1].strip()
        if not user or not item:
            raise DataFormatError(path, lineno, "empty user or item id")
        try:
            rating = float(fields[2])
        except ValueError:
            raise DataFormatError(path, lineno, f"rating {fields[2]!r} is not a number") from None
        if not math.isfinite(rating):
            raise DataFormatError(path, lineno, f"rating {fields[2]!r} is not finite")
        stamp = 0
        if has_ts:
            try:
                stamp = int(float(fields[3]))
            except (ValueError, OverflowError):
                raise DataFormatError(
                    path, lineno, f"timestamp {fields[3]!r} is not a number"
                ) from None
            if not -(2**62) <= stamp < 2**62:  # seconds; an int64 column holds it with room
                raise DataFormatError(
                    path, lineno, f"timestamp {fields[3]!r} is out of range (|t| < 2^62)"
                )
        users.append(user)
        items.append(item)
        ratings.append(rating)
        stamps.append(stamp)
        linenos.append(lineno)
    if not users:
        raise DataFormatError(path, None, "no ratings found")
    return _Parsed(users, items, ratings, stamps, linenos, has_ts)


def _read_ratings_text(path: str) -> list[str]:
    """Ratings files are UTF-8 or (MovieLens 100K/1M) Latin-1; ids decode the same in both."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.read().splitlines()
    except UnicodeDecodeError:
        return _read_lines(path, "latin-1")


def _read_lines(path: str, encoding: str) -> list[str]:
    try:
        with open(path, encoding=encoding, newline="") as fh:
            return fh.read().splitlines()
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, None, f"not {encoding} text: {exc.reason}") from None


def _split_lines(
    path: str, lines: list[str], splitter: Callable[[str], list[str]], start: int = 0
) -> Iterable[tuple[int, list[str]]]:
    for k in range(start, len(lines)):
        line = lines[k]
        if not line.strip():
            continue
        yield k + 1, splitter(line)


def _csv_rows(path: str, lines: list[str], start: int) -> Iterable[tuple[int, list[str]]]:
    for k in range(start, len(lines)):
        if not lines[k].strip():
            continue
        try:
            row = next(csv.reader([lines[k]]))
        except csv.Error as exc:
            raise DataFormatError(path, k + 1, f"bad CSV: {exc}") from None
        yield k + 1, row


def _dense(raw: list[str]) -> tuple[IntArray, NDArray[np.str_]]:
    """Map raw ids to 0..n-1, ordered numerically when all ids are integers."""
    uniq = sorted(set(raw))
    with contextlib.suppress(ValueError):
        uniq = sorted(uniq, key=int)
    index = {v: k for k, v in enumerate(uniq)}
    dense = np.fromiter((index[v] for v in raw), dtype=np.int64, count=len(raw))
    return dense, np.array(uniq, dtype=str)


_HEADER_WORDS = ("user", "item", "movie", "rating", "time", "product", "id")


def _looks_like_header(fields: Sequence[str]) -> bool:
    try:
        float(fields[2])
        return False
    except (ValueError, IndexError):
        pass
    lowered = [f.strip().lower() for f in fields]
    return len(lowered) >= 3 and all(any(w in f for w in _HEADER_WORDS) for f in lowered[:3])


# ----------------------------------------------------------------------------- metadata


_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


def _year_of(text: str) -> float:
    text = text.strip()
    if len(text) >= 4 and text[-4:].isdigit():
        return float(text[-4:])
    match = _YEAR_IN_TITLE.search(text)
    return float(match.group(1)) if match else math.nan


def _load_u_item(
    path: str, item_index: dict[str, int], num_items: int
) -> tuple[FloatArray, tuple[str, ...], FloatArray]:
    folder = os.path.dirname(path)
    genre_path = os.path.join(folder, "u.genre")
    names: list[str] = []
    if os.path.exists(genre_path):
        for lineno, fields in _split_lines(
            genre_path, _read_lines(genre_path, "latin-1"), lambda s: s.split("|")
        ):
            if len(fields) != 2:
                raise DataFormatError(genre_path, lineno, "expected 'name|index'")
            names.append(fields[0])
    lines = _read_lines(path, "latin-1")
    n_genres = len(names) if names else 19
    genres = np.zeros((num_items, n_genres))
    years = np.full(num_items, np.nan)
    for lineno, fields in _split_lines(path, lines, lambda s: s.split("|")):
        if len(fields) != 5 + n_genres:
            raise DataFormatError(path, lineno, f"expected {5 + n_genres} '|'-separated fields")
        k = item_index.get(fields[0])
        if k is None:
            continue  # metadata of an item nobody rated: not in the catalog
        try:
            genres[k] = [int(x) for x in fields[5:]]
        except ValueError:
            raise DataFormatError(path, lineno, "genre flags must be 0 or 1") from None
        years[k] = _year_of(fields[2]) if fields[2] else _year_of(fields[1])
    names_t = tuple(names) if names else tuple(f"genre{g}" for g in range(n_genres))
    return genres, names_t, years


def _genre_table(
    path: str,
    rows: Iterable[tuple[int, Sequence[str]]],
    item_index: dict[str, int],
    num_items: int,
) -> tuple[FloatArray, tuple[str, ...], FloatArray]:
    """``movies.dat`` / ``movies.csv``: id, "Title (Year)", "G1|G2|..."."""
    per_item: dict[int, list[str]] = {}
    years = np.full(num_items, np.nan)
    vocab: dict[str, int] = {}
    for lineno, fields in rows:
        if len(fields) != 3:
            raise DataFormatError(
                path, lineno, f"expected 3 fields (id,title,genres), got {len(fields)}"
            )
        k = item_index.get(fields[0].strip())
        if k is None:
            continue
        gs = [g for g in fields[2].split("|") if g and g != "(no genres listed)"]
        per_item[k] = gs
        for g in gs:
            vocab.setdefault(g, len(vocab))
        years[k] = _year_of(fields[1])
    names = tuple(sorted(vocab))
    col = {g: c for c, g in enumerate(names)}
    genres = np.zeros((num_items, len(names)))
    for k, gs in per_item.items():
        genres[k, [col[g] for g in gs]] = 1.0
    return genres, names, years


# ----------------------------------------------------------------------------- public loader


# Delimiters tried on a ratings file, in order of preference when several fit equally well;
# None is any run of whitespace.
_DELIMITERS: tuple[str | None, ...] = ("::", "\t", ",", ";", "|", None)
_DELIMITER_NAMES = {"::": "'::'", "\t": "tab", ",": "','", ";": "';'", "|": "'|'", None: "spaces"}
_SNIFF_LINES = 50
# Files whose MovieLens layout always has a timestamp column (ratings.csv: when found in a
# MovieLens folder, where it also has a header; a ratings.csv given directly is generic).
_TIMESTAMPED_NAMES = ("u.data", "ratings.dat", "ratings.csv")


def _find_ratings_file(path: str) -> str:
    """The ratings file of a path: the path itself, or a MovieLens file inside a folder."""
    if os.path.isdir(path):
        for name in ("u.data", "ratings.dat", "ratings.csv"):
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate
        raise DataNotFoundError(f"{path}: no u.data, ratings.dat or ratings.csv in this folder")
    if not os.path.isfile(path):
        raise DataNotFoundError(f"{path}: no such file")
    return path


def _splitter(delimiter: str | None) -> Callable[[str], list[str]]:
    if delimiter is None:
        return str.split
    return lambda line: line.split(delimiter)


def _sniff_delimiter(path: str, lines: list[str]) -> str | None:
    """The delimiter under which the first lines split alike into 3 or 4 fields.

    Each candidate is scored by how many of the first non-empty lines split into as many
    fields as the first one (which must give 3 or 4, or 3 for a header row); the best score
    wins, ties go to the earlier candidate. A bad row further down then fails on its own
    line with its own cause instead of making the whole file unreadable.
    """
    sample = [line for line in lines[: _SNIFF_LINES * 2] if line.strip()][:_SNIFF_LINES]
    if not sample:
        raise DataFormatError(path, None, "no ratings found")
    best: tuple[int, str | None] | None = None
    for delimiter in _DELIMITERS:
        if delimiter is not None and delimiter not in sample[0]:
            continue
        split = _splitter(delimiter)
        width = len(split(sample[0]))
        if width not in (3, 4):
            continue
        score = sum(len(split(line)) == width for line in sample)
        if best is None or score > best[0]:
            best = (score, delimiter)
    if best is None:
        first = next(k for k, line in enumerate(lines) if line.strip())
        raise DataFormatError(
            path,
            first + 1,
            "cannot read a rating here: expected user, item, rating and optionally a "
            "timestamp, separated by tabs, '::', ',', ';', '|' or spaces",
        )
    return best[1]


def _drop_exact_duplicates(
    path: str,
    users: IntArray,
    items: IntArray,
    ratings: FloatArray,
    stamps: IntArray,
    linenos: list[int],
) -> tuple[IntArray, int]:
    """Indices of the rows to keep (first occurrences, in file order) and the number dropped."""
    table = np.stack(
        [users.astype(np.float64), items.astype(np.float64), ratings, stamps.astype(np.float64)]
    )
    _, first = np.unique(table, axis=1, return_index=True)
    keep = np.sort(first)
    dropped = len(users) - len(keep)
    if dropped:
        repeated = np.setdiff1d(np.arange(len(users)), keep)
        warnings.warn(
            f"{path}: dropped {dropped} exact duplicate row(s) (same user, item, rating and "
            f"timestamp), the first on line {linenos[int(repeated[0])]}",
            DuplicateRowsWarning,
            stacklevel=3,
        )
    return keep.astype(np.int64), dropped


def load_ratings(path: str | os.PathLike[str]) -> Ratings:
    """Load a ratings file or folder; the format is read from the file's content.

    Folders: MovieLens 100K (``u.data``), 1M/10M (``ratings.dat``) or latest/20M/25M
    (``ratings.csv``). Files of any name: rows ``user, item, rating[, timestamp]`` separated
    by tabs, ``::``, commas (CSV quoting honoured), semicolons, ``|`` or spaces, detected from
    the first lines; an optional header row is recognised by its column names. Public metadata
    beside the ratings (``u.item``, ``movies.dat``, ``movies.csv``) is attached when present.
    Ids are remapped densely; any malformed row raises :class:`DataFormatError` with the file,
    the line and the cause; exact duplicate rows are dropped with a
    :class:`DuplicateRowsWarning` and counted in ``duplicates_dropped``.
    """
    path = os.fspath(path)
    rpath = _find_ratings_file(path)
    from_folder = os.path.isdir(path)
    folder = os.path.dirname(rpath)
    base = os.path.basename(rpath)
    lines = _read_ratings_text(rpath)
    delimiter = _sniff_delimiter(rpath, lines)
    rows: Iterable[tuple[int, list[str]]]
    if delimiter == ",":
        first = next(iter(_csv_rows(rpath, lines, 0)), None)
    else:
        first = next(iter(_split_lines(rpath, lines, _splitter(delimiter))), None)
    start = 0
    if first is not None and _looks_like_header(first[1]):
        start = first[0]
    elif from_folder and base == "ratings.csv":  # MovieLens latest/20M/25M always have one
        raise DataFormatError(rpath, 1, "ratings.csv must start with a header row")
    if delimiter == ",":
        rows = _csv_rows(rpath, lines, start)
    else:
        rows = _split_lines(rpath, lines, _splitter(delimiter), start)
    timestamped = base.endswith((".base", ".test")) or (
        base in _TIMESTAMPED_NAMES and (from_folder or base != "ratings.csv")
    )
    parsed = _parse_rows(rpath, rows, need_timestamp=timestamped)
    raw_users, raw_items = parsed.users, parsed.items
    ratings, stamps, has_ts = parsed.ratings, parsed.stamps, parsed.has_timestamps
    users, user_ids = _dense(raw_users)
    items, item_ids = _dense(raw_items)
    rating_arr = np.asarray(ratings, dtype=np.float64)
    stamp_arr = np.asarray(stamps, dtype=np.int64)
    keep, duplicates = _drop_exact_duplicates(
        rpath, users, items, rating_arr, stamp_arr, parsed.linenos
    )
    if duplicates:  # a repeat never holds a user's or item's only row: ids stay dense
        users, items, rating_arr, stamp_arr = (
            users[keep],
            items[keep],
            rating_arr[keep],
            stamp_arr[keep],
        )
    num_items = len(item_ids)
    item_index = {v: k for k, v in enumerate(item_ids.tolist())}

    genres: FloatArray | None = None
    names: tuple[str, ...] = ()
    years: FloatArray | None = None
    u_item = os.path.join(folder, "u.item")
    movies_dat = os.path.join(folder, "movies.dat")
    movies_csv = os.path.join(folder, "movies.csv")
    # the metadata beside the ratings, whichever MovieLens release wrote it
    if os.path.isfile(u_item):
        genres, names, years = _load_u_item(u_item, item_index, num_items)
    elif os.path.isfile(movies_dat):
        mlines = _read_lines(movies_dat, "latin-1")
        genres, names, years = _genre_table(
            movies_dat,
            _split_lines(movies_dat, mlines, lambda s: s.split("::")),
            item_index,
            num_items,
        )
    elif os.path.isfile(movies_csv):
        mlines = _read_lines(movies_csv, "utf-8")
        genres, names, years = _genre_table(
            movies_csv, _csv_rows(movies_csv, mlines, 1), item_index, num_items
        )
    return Ratings(
        users=users,
        items=items,
        ratings=rating_arr,
        timestamps=stamp_arr,
        num_users=len(user_ids),
        num_items=num_items,
        source=rpath,
        synthetic=False,
        has_timestamps=has_ts,
        user_ids=user_ids,
        item_ids=item_ids,
        item_genres=genres,
        genre_names=names,
        item_years=years,
        duplicates_dropped=duplicates,
    )


# ----------------------------------------------------------------------------- synthetic data

_SYN_START = 852_076_800  # 1997-01-01 UTC: a MovieLens-like collection window
_SYN_SPAN = 2 * 365 * 86_400


def synthetic_ratings(
    num_users: int,
    num_items: int,
    *,
    seed: int = 0,
    dim: int = 8,
    num_genres: int = 12,
    mean_activity: float = 60.0,
    min_activity: int = 10,
    popularity_exponent: float = 0.9,
    freshness_years: float = 2.0,
    chunk_users: int = 2048,
) -> Ratings:
    """A seeded, MovieLens-like synthetic population (always labelled synthetic).

    Items get latent factors, power-law popularity (Zipf exponent ``popularity_exponent``),
    public genres derived from their factors (so metadata is informative, as on MovieLens)
    and release years; users get latent factors, heavy-tailed activity (log-normal, at least
    ``min_activity`` ratings, mean about ``mean_activity``) and a time window. Each user picks
    items without replacement by the Gumbel-top-k trick on popularity + affinity + freshness
    (items are preferred shortly after release), rates them 1..5 from the affinity, in time
    order. Vectorised over chunks of users, so 10^6 users fit in memory and minutes.
    """
    if num_users < 2 or num_items < 2:
        raise ConfigError("synthetic_ratings needs at least 2 users and 2 items")
    if min_activity < 2:
        raise ConfigError("min_activity must be at least 2 (leave-last-out needs history)")
    if min_activity >= num_items:
        raise ConfigError("min_activity must be smaller than num_items")
    if mean_activity < min_activity or dim < 1 or num_genres < 1 or chunk_users < 1:
        raise ConfigError("need mean_activity >= min_activity, dim >= 1, num_genres >= 1")
    rng = np.random.default_rng(seed)
    item_f = rng.normal(0.0, 1.0, (num_items, dim)) / math.sqrt(dim)
    ranks = rng.permutation(num_items) + 1
    pop_logit = -popularity_exponent * np.log(ranks.astype(np.float64))
    release = _SYN_START - rng.exponential(3 * 365 * 86_400, num_items)
    release = np.where(
        rng.random(num_items) < 0.25, _SYN_START + rng.random(num_items) * _SYN_SPAN, release
    )
    years = 1970.0 + (release - 0.0) / (365.25 * 86_400)
    years = np.floor(years)
    # public genres: a fixed random projection of the latent factors, 1-3 genres per item
    proj = rng.normal(0.0, 1.0, (dim, num_genres))
    g_score = item_f @ proj + rng.normal(0.0, 0.5, (num_items, num_genres))
    n_gen = rng.integers(1, 4, num_items)
    order = np.argsort(-g_score, axis=1)
    genres = np.zeros((num_items, num_genres))
    for k in range(3):
        rows = np.flatnonzero(n_gen > k)
        genres[rows, order[rows, k]] = 1.0

    sigma = 1.0
    mu = math.log(max(mean_activity - min_activity, 1.0)) - sigma**2 / 2
    users_out: list[IntArray] = []
    items_out: list[IntArray] = []
    ratings_out: list[FloatArray] = []
    stamps_out: list[IntArray] = []
    fresh_scale = freshness_years * 365 * 86_400
    for lo in range(0, num_users, chunk_users):
        b = min(chunk_users, num_users - lo)
        uf = rng.normal(0.0, 1.0, (b, dim)) * 1.5
        act = np.minimum(min_activity + rng.lognormal(mu, sigma, b).astype(np.int64), num_items - 1)
        t0 = _SYN_START + rng.random(b) * _SYN_SPAN * 0.9
        dur = rng.exponential(30 * 86_400, b)
        affinity = uf @ item_f.T
        age = t0[:, None] - release[None, :]
        fresh = np.where(age < 0, -8.0, -np.maximum(age, 0.0) / fresh_scale)
        logits = pop_logit[None, :] + affinity + fresh
        keys = logits + rng.gumbel(0.0, 1.0, logits.shape)
        kmax = int(act.max())
        top = np.argpartition(-keys, kmax - 1, axis=1)[:, :kmax]
        top_keys = np.take_along_axis(keys, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_keys, axis=1), axis=1)
        take = np.arange(kmax)[None, :] < act[:, None]
        rows, cols = np.nonzero(take)
        chosen = top[rows, cols]
        aff = affinity[rows, chosen]
        stars = np.clip(np.rint(3.6 + 1.2 * aff + rng.normal(0.0, 0.7, len(rows))), 1, 5)
        offs = rng.random(len(rows)) * dur[rows]
        stamps = (t0[rows] + offs).astype(np.int64)
        users_out.append((lo + rows).astype(np.int64))
        items_out.append(chosen.astype(np.int64))
        ratings_out.append(stars)
        stamps_out.append(stamps)
    users = np.concatenate(users_out)
    items = np.concatenate(items_out)
    source = (
        f"synthetic(num_users={num_users}, num_items={num_items}, seed={seed}, dim={dim}, "
        f"mean_activity={mean_activity})"
    )
    return Ratings(
        users=users,
        items=items,
        ratings=np.concatenate(ratings_out),
        timestamps=np.concatenate(stamps_out),
        num_users=num_users,
        num_items=num_items,
        source=source,
        synthetic=True,
        has_timestamps=True,
        user_ids=np.arange(num_users).astype(str),
        item_ids=np.arange(num_items).astype(str),
        item_genres=genres,
        genre_names=tuple(f"genre{g}" for g in range(num_genres)),
        item_years=years,
    )
