"""Loaders on every supported format, strict errors, and the synthetic generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.data import load_ratings, synthetic_ratings
from recsys.errors import ConfigError, DataFormatError, DataNotFoundError, RecsysError


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def test_ml100k_folder_with_metadata(tmp_path: Path) -> None:
    _write(tmp_path / "u.data", "10\t7\t5\t100\n3\t7\t4\t90\n10\t2\t1\t95\n")
    _write(tmp_path / "u.genre", "unknown|0\nAction|1\nComedy|2\n\n")
    flags = "|0|1|0"
    _write(
        tmp_path / "u.item",
        f"2|B (1990)|01-Jan-1990||http://x{flags}\n7|A (1996)|01-Jan-1996||http://y|0|0|1\n"
        f"9|Unrated (1980)|01-Jan-1980||u{flags}\n",
        encoding="latin-1",
    )
    r = load_ratings(tmp_path)
    assert (r.num_users, r.num_items, r.num_ratings) == (2, 2, 3)
    # raw ids sorted numerically: users 3 -> 0, 10 -> 1; items 2 -> 0, 7 -> 1
    assert r.user_ids.tolist() == ["3", "10"]
    assert r.item_ids.tolist() == ["2", "7"]
    assert r.users.tolist() == [1, 0, 1]
    assert r.items.tolist() == [1, 1, 0]
    assert r.ratings.tolist() == [5.0, 4.0, 1.0]
    assert r.timestamps.tolist() == [100, 90, 95]
    assert r.genre_names == ("unknown", "Action", "Comedy")
    assert r.item_genres is not None and r.item_genres.tolist() == [[0, 1, 0], [0, 0, 1]]
    assert r.item_years is not None and r.item_years.tolist() == [1990.0, 1996.0]
    assert not r.synthetic and "real" in r.label


def test_ml1m_dat_with_movies(tmp_path: Path) -> None:
    _write(tmp_path / "ratings.dat", "1::20::5::978300760\n2::10::3::978302109\n1::10::4::1\n")
    _write(
        tmp_path / "movies.dat",
        "10::Toy Story (1995)::Animation|Children's\n20::Heat (1995)::Action\n",
        encoding="latin-1",
    )
    r = load_ratings(tmp_path)
    assert (r.num_users, r.num_items, r.num_ratings) == (2, 2, 3)
    assert r.genre_names == ("Action", "Animation", "Children's")
    assert r.item_genres is not None
    assert r.item_genres.tolist() == [[0, 1, 1], [1, 0, 0]]
    assert r.item_years is not None and r.item_years.tolist() == [1995.0, 1995.0]


def test_ml_latest_csv_with_quoted_titles(tmp_path: Path) -> None:
    _write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n"
        "7,31,4.5,1260759200\n",
    )
    _write(
        tmp_path / "movies.csv",
        'movieId,title,genres\n31,"Dangerous Minds, The (1995)",Drama\n'
        "1029,Dumbo (1941),Animation|Children|Drama\n5,Never Rated (2000),(no genres listed)\n",
    )
    r = load_ratings(tmp_path / "ratings.csv")
    assert (r.num_users, r.num_items, r.num_ratings) == (2, 2, 3)
    assert r.ratings.tolist() == [2.5, 3.0, 4.5]
    assert r.genre_names == ("Animation", "Children", "Drama")
    assert r.item_years is not None and r.item_years.tolist() == [1995.0, 1941.0]


@pytest.mark.parametrize("header", ["", "user,item,rating\n"])
def test_generic_csv_without_timestamps(tmp_path: Path, header: str) -> None:
    path = _write(tmp_path / "mine.csv", header + "alice,book,4\nbob,book,2\nalice,pen,5\n")
    r = load_ratings(path)
    assert (r.num_users, r.num_items, r.num_ratings) == (2, 2, 3)
    assert r.user_ids.tolist() == ["alice", "bob"]
    assert not r.has_timestamps
    assert r.timestamps.tolist() == [0, 0, 0]
    assert r.item_genres is None


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("1,2,5,10\n1,3\n", 2, "expected 4 fields"),
        ("1,2,5,10\n1,3,five,11\n", 2, "is not a number"),
        ("1,2,5,10\n1,3,4,soon\n", 2, "timestamp"),
        ("1,2,5,10\n,3,4,12\n", 2, "empty user or item"),
        ("1,2,nan,10\n", 1, "not finite"),
        ("user,item,rating\n1,2,x\n", 2, "is not a number"),
        ("u,i,r\n1,2,3\n", 1, "is not a number"),
        ("1,2,oops\n", 1, "is not a number"),
    ],
)
def test_malformed_rows_name_file_and_line(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(DataFormatError) as info:
        load_ratings(path)
    assert info.value.line == line
    assert f"bad.csv:{line}" in str(info.value)
    assert fragment in str(info.value)
    assert isinstance(info.value, RecsysError)


def test_malformed_u_data_and_metadata(tmp_path: Path) -> None:
    _write(tmp_path / "u.data", "1\t2\t3\t4\n1\t2\n")
    with pytest.raises(DataFormatError, match=r"u\.data:2"):
        load_ratings(tmp_path)
    _write(tmp_path / "u.data", "1\t2\t3\t4\n")
    _write(tmp_path / "u.item", "2|A (1990)|01-Jan-1990||x|0|1\n")
    with pytest.raises(DataFormatError, match=r"u\.item:1"):
        load_ratings(tmp_path)


def test_ratings_csv_requires_header_and_empty_files_fail(tmp_path: Path) -> None:
    _write(tmp_path / "ratings.csv", "1,2,3,4\n")
    with pytest.raises(DataFormatError, match="header"):
        load_ratings(tmp_path)
    with pytest.raises(DataFormatError, match="no ratings"):
        load_ratings(_write(tmp_path / "empty.csv", "\n\n"))


def test_missing_paths_are_typed(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError):
        load_ratings(tmp_path / "nope.csv")
    with pytest.raises(DataNotFoundError, match=r"no u\.data"):
        load_ratings(tmp_path)


def test_duplicate_user_item_pairs_are_kept_in_the_raw_data(tmp_path: Path) -> None:
    r = load_ratings(_write(tmp_path / "d.csv", "1,2,3,4\n1,2,5,9\n"))
    assert r.num_ratings == 2  # the split keeps the latest; the loader keeps the file as is


def test_ml100k_real_counts(ml100k_dir: Path) -> None:
    r = load_ratings(ml100k_dir)
    assert (r.num_users, r.num_items, r.num_ratings) == (943, 1682, 100_000)
    assert r.item_genres is not None and r.item_genres.shape == (1682, 19)
    assert r.genre_names[:2] == ("unknown", "Action")
    assert r.item_years is not None and np.isfinite(r.item_years).sum() == 1681
    assert set(np.unique(r.ratings)) == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_synthetic_is_seeded_and_labelled() -> None:
    a = synthetic_ratings(300, 120, seed=3, mean_activity=20, min_activity=5)
    b = synthetic_ratings(300, 120, seed=3, mean_activity=20, min_activity=5)
    c = synthetic_ratings(300, 120, seed=4, mean_activity=20, min_activity=5)
    assert a.synthetic and "SYNTHETIC" in a.label
    assert np.array_equal(a.items, b.items) and np.array_equal(a.timestamps, b.timestamps)
    assert not np.array_equal(a.items, c.items)
    counts = np.bincount(a.users, minlength=300)
    assert counts.min() >= 5
    # no user rates an item twice
    assert len(np.unique(a.users * 120 + a.items)) == a.num_ratings
    assert set(np.unique(a.ratings)) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_synthetic_is_realistic_heavy_tailed() -> None:
    r = synthetic_ratings(2000, 400, seed=0, mean_activity=40, min_activity=10)
    activity = np.bincount(r.users, minlength=2000)
    popularity = np.sort(np.bincount(r.items, minlength=400))[::-1]
    # heavy-tailed activity: mean well above median; skewed popularity: top 10% of items
    # draw a large share of the ratings
    assert activity.mean() > 1.15 * np.median(activity)
    assert popularity[:40].sum() > 0.3 * popularity.sum()
    assert r.item_genres is not None and (r.item_genres.sum(axis=1) >= 1).all()


def test_synthetic_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        synthetic_ratings(1, 10)
    with pytest.raises(ConfigError):
        synthetic_ratings(10, 10, min_activity=10)
    with pytest.raises(ConfigError):
        synthetic_ratings(10, 10, min_activity=1)


# ------------------------------------------------------------------ format from content (issue 19)


def test_format_is_read_from_content_not_from_the_name(tmp_path: Path) -> None:
    text = "10\t7\t5\t100\n3\t7\t4\t90\n10\t2\t1\t95\n"
    as_u_data = load_ratings(_write(tmp_path / "u.data", text))
    for name in ("renamed.tsv", "ratings.txt", "data.csv"):
        r = load_ratings(_write(tmp_path / name, text))
        assert r.has_timestamps
        assert r.users.tolist() == as_u_data.users.tolist()
        assert r.timestamps.tolist() == [100, 90, 95]
    dat = load_ratings(_write(tmp_path / "x.csv", "1::20::5::978300760\n2::10::3::1\n"))
    assert dat.ratings.tolist() == [5.0, 3.0]
    semi = load_ratings(_write(tmp_path / "s.dat", "user;item;rating\na;b;4\nc;b;2\n"))
    assert semi.user_ids.tolist() == ["a", "c"] and not semi.has_timestamps
    spaces = load_ratings(_write(tmp_path / "w.txt", "1 2 3 4\n2  3  4  5\n"))
    assert spaces.timestamps.tolist() == [4, 5]


def test_bad_value_reports_its_own_line_and_cause(tmp_path: Path) -> None:
    rows = [f"{u}\t{u + 1}\t4\t{100 + u}" for u in range(8)]
    rows[4] = "4\t5\tfour\t104"
    path = _write(tmp_path / "renamed.tsv", "\n".join(rows) + "\n")
    with pytest.raises(DataFormatError) as info:
        load_ratings(path)
    assert info.value.line == 5
    assert "rating 'four' is not a number" in str(info.value)
    rows[4] = "4\t5\t4"
    with pytest.raises(DataFormatError, match=r"renamed\.tsv:5: expected 4 fields"):
        load_ratings(_write(tmp_path / "renamed.tsv", "\n".join(rows) + "\n"))


def test_unreadable_first_line_names_the_accepted_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"x\.txt:2: cannot read a rating.*tabs"):
        load_ratings(_write(tmp_path / "x.txt", "\njust-one-field\n"))


def test_exact_duplicate_rows_are_dropped_with_a_warning(tmp_path: Path) -> None:
    from recsys.data import DuplicateRowsWarning

    text = "1,2,5,10\n1,3,4,11\n1,2,5,10\n2,2,3,12\n1,2,5,10\n1,2,4,10\n"
    with pytest.warns(DuplicateRowsWarning, match=r"dropped 2 exact duplicate.*line 3"):
        r = load_ratings(_write(tmp_path / "dup.csv", text))
    assert r.duplicates_dropped == 2
    assert r.num_ratings == 4
    # first occurrences kept in file order; a different rating is not an exact duplicate
    assert r.ratings.tolist() == [5.0, 4.0, 3.0, 4.0]
    clean = load_ratings(_write(tmp_path / "clean.csv", "1,2,5,10\n1,3,4,11\n"))
    assert clean.duplicates_dropped == 0


def test_a_timestamp_beyond_the_int64_column_is_a_typed_error_naming_its_line(
    tmp_path: Path,
) -> None:
    """Found by the long fuzz run: a timestamp near 2^63 used to escape as OverflowError."""

    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,1,4,100\n1,2,3,9223372036854775296\n")
    with pytest.raises(DataFormatError, match=r":3: timestamp .* out of range"):
        load_ratings(path)
