"""Loaders: every format parsed from small files written here, bad input named by file/line/field, real data counts."""
from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from llmcf.data.loaders import load_dataset
from llmcf.data.loaders.atomic import parse_categories
from llmcf.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode(encoding)
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def tsv(*rows: str) -> str:
    return "\n".join(rows) + "\n"


def jsonl(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def raises(fn, file: str, line: int | None, field: str | None, *words: str) -> DataError:
    """Call fn, expect a DataError whose message names file, line and field (and contains the words)."""
    with pytest.raises(DataError) as ei:
        fn()
    msg = str(ei.value)
    assert file in msg, msg
    if line is not None:
        assert re.search(rf"\bline {line}\b", msg), msg
        assert ei.value.line == line
    if field is not None:
        assert f"field '{field}'" in msg, msg
    for w in words:
        assert w in msg, msg
    return ei.value


# ---------------------------------------------------------------- RecBole atomic files

BEAUTY_ITEM = tsv(
    "item_id:token\ttitle:token\tsales_rank:float\tcategories:token_seq\tprice:float\tbrand:token",
    "A1\tLip Gloss  Red \t10.0\t'Beauty', 'Makeup', 'Lips'\t5.5\tAcme",
    'A2\t"Kit \t with tab"\t\t"\'Beauty\', \'Fragrance\', ""Women\'s"", \'Eau de Parfum\'"\t\t',
    "A3\t\t\t\t\tNoName",
    'A4\t"Broken quote title ',
)


@pytest.fixture
def beauty_like(tmp_path):
    d = tmp_path / "beauty"
    write(d / "Beauty.inter", tsv("user_id:token\titem_id:token\ttimestamp:float",
                                  "u1\tA1\t0", "u1\tA2\t1", "u1\tA4\t2", "u2\tA3\t0", "u2\tA1\t1"))
    write(d / "Beauty.item", BEAUTY_ITEM)
    return d


def test_atomic_beauty_style(beauty_like):
    before = sorted(os.listdir(beauty_like))
    ds = load_dataset(str(beauty_like))
    assert sorted(os.listdir(beauty_like)) == before  # loaders only read
    inter = ds.interactions
    assert list(inter.columns) == ["user_id", "item_id", "timestamp"]
    assert list(inter["item_id"]) == ["A1", "A2", "A4", "A3", "A1"]
    assert inter["timestamp"].dtype == "float64"
    assert ds.real_time is False  # each user's timestamps are 0..n-1
    assert ds.label_hint == "implicit"
    assert ds.name == "Beauty" and ds.users is None
    it = ds.items.set_index("item_id")
    assert it.loc["A1", "title"] == "Lip Gloss Red"
    assert it.loc["A1", "categories"] == ["Beauty", "Makeup", "Lips"]
    assert it.loc["A1", "text"] == "title: Lip Gloss Red; brand: Acme; category: Beauty, Makeup, Lips"
    assert it.loc["A1", "price"] == 5.5
    assert it.loc["A2", "title"] == "Kit with tab"
    assert it.loc["A2", "categories"] == ["Beauty", "Fragrance", "Women's", "Eau de Parfum"]
    assert it.loc["A2", "brand"] == "" and math.isnan(it.loc["A2", "price"])
    assert it.loc["A3", "title"] == "" and it.loc["A3", "categories"] == []
    assert it.loc["A3", "text"] == "brand: NoName"
    assert it.loc["A4", "title"] == "Broken quote title"  # a short row: its missing fields are empty
    assert it.loc["A4", "text"] == "title: Broken quote title"


def test_atomic_movielens_style_with_users(tmp_path):
    d = tmp_path / "ml"
    write(d / "ml.inter", tsv("user_id:token\titem_id:token\trating:float\ttimestamp:float",
                              "1\t10\t4\t881250949", "2\t10\t2.5\t881250950", "1\t20\t5\t881250000"))
    write(d / "ml.item", tsv("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
                             "10\tToy Story\t1995\tAnimation Children's Comedy", "20\tunknown\t\t"))
    write(d / "ml.user", tsv("user_id:token\tage:token\tgender:token", "1\t24\tM", "2\t53\tF"))
    ds = load_dataset(str(d / "ml"))  # a file prefix
    assert ds.real_time is True and ds.label_hint == "rating"
    assert list(ds.interactions["rating"]) == [4.0, 2.5, 5.0]
    assert list(ds.interactions["timestamp"]) == [881250949.0, 881250950.0, 881250000.0]
    it = ds.items.set_index("item_id")
    assert it.loc["10", "title"] == "Toy Story (1995)"
    assert it.loc["10", "categories"] == ["Animation", "Children's", "Comedy"]
    assert it.loc["20", "title"] == "unknown" and it.loc["20", "categories"] == []
    assert ds.users.to_dict("records") == [{"user_id": "1", "age": "24", "gender": "M"},
                                           {"user_id": "2", "age": "53", "gender": "F"}]
    # the same dataset named by one of its files, and with the format forced
    assert load_dataset(str(d / "ml.item"), "atomic").interactions.equals(ds.interactions)


def test_atomic_label_column_and_no_item_table(tmp_path):
    d = tmp_path / "ctr"
    write(d / "ctr.inter", tsv("user_id:token\titem_id:token\tlabel:float\ttimestamp:float",
                               "u\ti1\t1\t100", "u\ti2\t0\t50", "v\ti1\t0.0\t70"))
    ds = load_dataset(str(d))
    assert list(ds.interactions["label"]) == [1, 0, 0]
    assert ds.label_hint == "column" and ds.real_time is True
    assert sorted(ds.items["item_id"]) == ["i1", "i2"]
    assert list(ds.items["text"]) == ["", ""]


def test_atomic_without_timestamp_uses_file_order(tmp_path):
    write(tmp_path / "x.inter", tsv("user_id:token\titem_id:token", "u\tb", "v\ta", "u\ta"))
    ds = load_dataset(str(tmp_path))
    assert list(ds.interactions["timestamp"]) == [0.0, 0.0, 1.0]
    assert ds.real_time is False


@pytest.mark.parametrize("times,real", [("0 1 0 1 2", False), ("1 2 1 2 3", False), ("0 1 0 2 3", True),
                                        ("10 20 5 6 7", True)])
def test_real_time_detection(tmp_path, times, real):
    users = ["u", "u", "v", "v", "v"]
    write(tmp_path / "t.inter", tsv("user_id:token\titem_id:token\ttimestamp:float",
                                    *[f"{u}\ti{k}\t{t}" for k, (u, t) in enumerate(zip(users, times.split()))]))
    assert load_dataset(str(tmp_path)).real_time is real


def test_parse_categories_forms():
    assert parse_categories("'A', \"B's\", 'C, D'") == ["A", "B's", "C, D"]
    assert parse_categories("[['Beauty', 'Hair'], ['Other']]") == ["Beauty", "Hair"]
    assert parse_categories("Hair Care, Face") == ["Hair Care", "Face"]
    assert parse_categories("Action Sci-Fi", quoted_list=False) == ["Action", "Sci-Fi"]
    assert parse_categories("") == []
    with pytest.raises(ValueError):
        parse_categories("'A', __import__('os').system('true')")
    with pytest.raises(ValueError):
        parse_categories("'A', 3")


# ---------------------------------------------------------------- raw MovieLens

GENRE_FLAGS = ["0"] * 19


def _flags(*on: int) -> str:
    f = list(GENRE_FLAGS)
    for i in on:
        f[i] = "1"
    return "|".join(f)


def test_raw_ml100k(tmp_path):
    d = tmp_path / "ml-100k"
    write(d / "u.data", tsv("196\t242\t3\t881250949", "186\t302\t3\t891717742", "196\t302\t5\t881251000"))
    write(d / "u.item", tsv(f"242|Kolya (1996)|24-Jan-1997||http://x|{_flags(5)}",
                            f"302|Misérables, Les (1995)|01-Jan-1995||http://y|{_flags(3, 4, 5)}"), "latin-1")
    write(d / "u.user", tsv("196|49|M|writer|55105", "186|39|F|executive|00000"))
    ds = load_dataset(str(d))
    assert ds.name == "ml-100k" and ds.label_hint == "rating" and ds.real_time is True
    assert list(ds.interactions["user_id"]) == ["196", "186", "196"]
    assert list(ds.interactions["rating"]) == [3.0, 3.0, 5.0]
    it = ds.items.set_index("item_id")
    assert it.loc["302", "title"] == "Misérables, Les (1995)"
    assert it.loc["302", "categories"] == ["Animation", "Children's", "Comedy"]
    assert it.loc["242", "text"] == "title: Kolya (1996); category: Comedy"
    assert list(ds.users.columns) == ["user_id", "age", "gender", "occupation", "zip_code"]
    assert ds.users.iloc[1]["zip_code"] == "00000"


def test_raw_ml1m(tmp_path):
    d = tmp_path / "ml-1m"
    write(d / "ratings.dat", tsv("1::1193::5::978300760", "1::661::3::978302109", "2::1193::4::978298413"))
    write(d / "movies.dat", tsv("1193::One Flew Over the Cuckoo's Nest (1975)::Drama",
                                "661::James and the Giant Peach (1996)::Animation|Children's|Musical",
                                "5::Café (2000)::Comedy"), "latin-1")
    write(d / "users.dat", tsv("1::F::1::10::48067", "2::M::56::16::70072"))
    ds = load_dataset(str(d), "movielens")
    assert len(ds.interactions) == 3 and ds.interactions["timestamp"].iloc[0] == 978300760.0
    it = ds.items.set_index("item_id")
    assert it.loc["661", "categories"] == ["Animation", "Children's", "Musical"]
    assert it.loc["1193", "title"] == "One Flew Over the Cuckoo's Nest (1975)"
    assert it.loc["5", "title"] == "Café (2000)"
    assert ds.users.set_index("user_id").loc["2", "age"] == "56"


def test_raw_ml_latest_csv(tmp_path):
    d = tmp_path / "ml-latest-small"
    write(d / "ratings.csv", tsv("userId,movieId,rating,timestamp", "1,1,4.0,964982703", "1,3,4.5,964981247"))
    write(d / "movies.csv", tsv("movieId,title,genres", '1,"American President, The (1995)",Comedy|Drama|Romance',
                                "3,Grumpier Old Men (1995),(no genres listed)"))
    ds = load_dataset(str(d))
    it = ds.items.set_index("item_id")
    assert it.loc["1", "title"] == "American President, The (1995)"
    assert it.loc["1", "categories"] == ["Comedy", "Drama", "Romance"] and it.loc["3", "categories"] == []
    assert list(ds.interactions["rating"]) == [4.0, 4.5]


# ---------------------------------------------------------------- Amazon

def test_amazon_2014_python_literal_meta(tmp_path):
    d = tmp_path / "amz14"
    write(d / "reviews_Beauty_5.json.gz", jsonl([
        {"reviewerID": "R1", "asin": "B01", "overall": 5.0, "unixReviewTime": 1400000000, "reviewText": "ok"},
        {"reviewerID": "R1", "asin": "B02", "overall": 3.0, "unixReviewTime": 1400000100},
        {"reviewerID": "R2", "asin": "B03", "overall": 4.0, "unixReviewTime": 1300000000}]))
    write(d / "meta_Beauty.json.gz", "\n".join([
        "{'asin': 'B01', 'title': \"Men's  Balm\", 'price': 9.99, 'brand': 'Acme', "
        "'categories': [['Beauty', 'Skin Care'], ['Men']], 'related': {'also_bought': ['B02']}}",
        "{'asin': 'B02', 'categories': [['Beauty']], 'salesRank': {'Beauty': 10}}",
        "{'asin': 'B99', 'title': 'not reviewed', 'categories': [['X']]}",
        "{'asin': 'B01', 'title': 'a duplicate record: the first is kept'}"]) + "\n")
    ds = load_dataset(str(d))
    assert ds.name == "Beauty" and ds.source.startswith("amazon2014:")
    assert ds.label_hint == "implicit" and ds.real_time is True
    assert list(ds.interactions["rating"]) == [5.0, 3.0, 4.0]
    assert list(ds.interactions["timestamp"]) == [1400000000.0, 1400000100.0, 1300000000.0]
    it = ds.items.set_index("item_id")
    assert sorted(it.index) == ["B01", "B02", "B03"]  # B99 is not reviewed; B03 has no meta but keeps its review
    assert it.loc["B01", "text"] == "title: Men's Balm; brand: Acme; category: Beauty, Skin Care"
    assert it.loc["B01", "price"] == 9.99 and math.isnan(it.loc["B02", "price"])
    assert it.loc["B02", "categories"] == ["Beauty"] and it.loc["B02", "title"] == ""
    assert it.loc["B03", "text"] == ""


def test_amazon_2014_meta_is_never_evaluated(tmp_path):
    d = tmp_path / "amz"
    marker = tmp_path / "pwned"
    write(d / "reviews_Toys_5.json", jsonl([{"reviewerID": "R", "asin": "B1", "overall": 1, "unixReviewTime": 1}]))
    write(d / "meta_Toys.json", f"{{'asin': 'B1', 'title': __import__('pathlib').Path('{marker}').touch()}}\n")
    raises(lambda: load_dataset(str(d)), "meta_Toys.json", 1, None, "Python dict literal")
    assert not marker.exists()


def test_amazon_2018(tmp_path):
    d = tmp_path / "amz18"
    write(d / "Luxury_Beauty_5.json", jsonl([
        {"reviewerID": "R1", "asin": "X1", "overall": 4.0, "unixReviewTime": 1500000000, "verified": True},
        {"reviewerID": "R2", "asin": "X2", "overall": 2.0, "unixReviewTime": 1500000500}]))
    write(d / "meta_Luxury_Beauty.json.gz", jsonl([
        {"asin": "X1", "title": " Serum\n 30ml ", "brand": "Lux", "category": ["Luxury Beauty", "Skin"],
         "price": "$1,212.50"},
        {"asin": "X2", "title": "Cream", "brand": "", "category": [], "price": ""}]))
    ds = load_dataset(str(d / "Luxury_Beauty_5.json"))  # the review file itself
    assert ds.name == "Luxury_Beauty" and ds.source.startswith("amazon2018:")
    it = ds.items.set_index("item_id")
    assert it.loc["X1", "title"] == "Serum 30ml" and it.loc["X1", "price"] == 1212.5
    assert it.loc["X1", "categories"] == ["Luxury Beauty", "Skin"]
    assert it.loc["X2", "text"] == "title: Cream" and math.isnan(it.loc["X2", "price"])
    assert ds.label_hint == "implicit" and list(ds.interactions["user_id"]) == ["R1", "R2"]


def test_amazon_2023(tmp_path):
    d = tmp_path / "amz23"
    write(d / "All_Beauty.jsonl.gz", jsonl([
        {"rating": 5.0, "title": "t", "asin": "C1v", "parent_asin": "C1", "user_id": "U1", "timestamp": 1588687728923},
        {"rating": 1.0, "asin": "C2", "parent_asin": "C2", "user_id": "U1", "timestamp": 1588687729000}]))
    write(d / "meta_All_Beauty.jsonl", jsonl([
        {"main_category": "All Beauty", "title": "Hair Oil", "store": "Oily", "categories": ["Hair"],
         "price": None, "parent_asin": "C1"}]))
    ds = load_dataset(str(d), "amazon2023")
    assert list(ds.interactions["item_id"]) == ["C1", "C2"]
    assert ds.interactions["timestamp"].iloc[0] == pytest.approx(1588687728.923)
    assert ds.real_time is True
    it = ds.items.set_index("item_id")
    assert it.loc["C1", "text"] == "title: Hair Oil; brand: Oily; category: Hair"
    assert it.loc["C2", "text"] == ""


def test_amazon_label_column_validated(tmp_path):
    d = tmp_path / "a"
    rec = {"user_id": "U", "parent_asin": "P", "rating": 5, "timestamp": 1}
    write(d / "X.jsonl", jsonl([dict(rec, label=1), dict(rec, label=0)]))
    assert list(load_dataset(str(d)).interactions["label"]) == [1, 0]
    write(d / "X.jsonl", jsonl([dict(rec, label=1), dict(rec, label=3)]))
    raises(lambda: load_dataset(str(d)), "X.jsonl", 2, "label", "0 or 1")


# ---------------------------------------------------------------- bad input

INTER_HDR = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


def _atomic(tmp_path, inter: str, item: str | None = None, user: str | None = None) -> Path:
    write(tmp_path / "d.inter", inter)
    if item is not None:
        write(tmp_path / "d.item", item)
    if user is not None:
        write(tmp_path / "d.user", user)
    return tmp_path


def test_missing_folder_and_unknown_format(tmp_path):
    raises(lambda: load_dataset(str(tmp_path / "nope")), "nope", None, None, "no such file or folder")
    write(tmp_path / "readme.txt", "hello\n")
    raises(lambda: load_dataset(str(tmp_path)), str(tmp_path), None, None, "no known data format")
    raises(lambda: load_dataset(str(tmp_path), "movielens"), str(tmp_path), None, None, "u.data")
    with pytest.raises(DataError, match="data.format"):
        load_dataset(str(tmp_path), "csv")


def test_several_inter_files_need_a_prefix(tmp_path):
    write(tmp_path / "a.inter", tsv("user_id:token\titem_id:token", "u\ti"))
    write(tmp_path / "b.inter", tsv("user_id:token\titem_id:token", "u\ti"))
    raises(lambda: load_dataset(str(tmp_path)), str(tmp_path), None, None, "a.inter, b.inter")
    assert len(load_dataset(str(tmp_path / "b")).interactions) == 1


@pytest.mark.parametrize("case", [
    # (inter, item, user, file, line, field, words)
    ("user_id:token\trating:float\n1\t3\n", None, None, "d.inter", 1, "item_id", ["missing required column"]),
    (tsv(INTER_HDR, "1\t10\t4\t5", "1\t11\tfour\t6"), None, None, "d.inter", 3, "rating",
     ["expected a number", "four"]),
    (tsv(INTER_HDR, "1\t10\t4\t5", "", "1\t11\t4\t"), None, None, "d.inter", 4, "timestamp", ["expected a number"]),
    (tsv(INTER_HDR, "1\t\t4\t5"), None, None, "d.inter", 2, "item_id", ["empty id"]),
    (tsv(INTER_HDR), None, None, "d.inter", 1, None, ["empty file"]),
    (tsv("user_id:token\titem_id:tok", "1\t2"), None, None, "d.inter", 1, "item_id:tok", ["name:type"]),
    (tsv(INTER_HDR, "1\t10\t4\t5\textra"), None, None, "d.inter", 2, None, ["expected 4 fields", "found 5"]),
    (tsv(INTER_HDR, "1\t10\t4\t5", "2\t12\t4\t5", "3\t13\t4\t5", "4\t12\t4\t5"),
     tsv("item_id:token\ttitle:token", "10\tA", "11\tB"), None, "d.inter", 3, "item_id",
     ["3 interactions name 2 items absent", "'12'", "d.item"]),
    (tsv(INTER_HDR, "1\t10\t4\t5"), tsv("item_id:token\ttitle:token", "10\tA", "11\tB", "10\tC"), None,
     "d.item", 4, "item_id", ["duplicate item id '10'", "first listed on line 2"]),
    (tsv(INTER_HDR, "1\t10\t4\t5"), tsv("item_id:token\ttitle:token"), None, "d.item", 1, None, ["empty file"]),
    (tsv(INTER_HDR, "1\t10\t4\t5"), None, tsv("user_id:token\tage:token", "1\t20", "2\t30", "1\t40"),
     "d.user", 4, "user_id", ["duplicate user id '1'"]),
    (tsv("user_id:token\titem_id:token\tlabel:float", "1\t10\t1", "1\t11\t2"), None, None, "d.inter", 3, "label",
     ["expected a label 0 or 1", "'2'"]),
    (tsv(INTER_HDR, "1\t10\t4\t5"), tsv("item_id:token\tprice:float", "10\t$5"), None, "d.item", 2, "price",
     ["expected a number"]),
    (tsv(INTER_HDR, "1\t10\t4\t5"), tsv("item_id:token\tcategories:token_seq", "10\t'Beauty', Makeup'"), None,
     "d.item", 2, "categories", ["quoted names"]),
])
def test_atomic_bad_input(tmp_path, case):
    inter, item, user, file, line, field, words = case
    d = _atomic(tmp_path, inter, item, user)
    raises(lambda: load_dataset(str(d)), file, line, field, *words)


def test_movielens_bad_input(tmp_path):
    d = tmp_path / "ml-100k"
    write(d / "u.data", tsv("1\t2\t3\t4", "1\t3\tx\t5"))
    raises(lambda: load_dataset(str(d)), "u.data", 2, "rating", "expected a number")
    write(d / "u.data", tsv("1\t2\t3\t4"))
    write(d / "u.item", tsv(f"2|A (1990)|||u|{_flags(1)}", f"3|B (1990)|||u|{_flags(2).replace('1', '2')}"))
    raises(lambda: load_dataset(str(d)), "u.item", 2, "Adventure", "expected a genre flag 0 or 1")
    write(d / "u.item", tsv(f"3|B (1990)|||u|{_flags(2)}"))
    raises(lambda: load_dataset(str(d)), "u.data", 1, "item_id", "absent from the item table")


def test_amazon_bad_input(tmp_path):
    d = tmp_path / "amz"
    good = {"reviewerID": "R", "asin": "B", "overall": 5, "unixReviewTime": 1}
    write(d / "reviews_X_5.json", jsonl([good]) + "{not json\n")
    raises(lambda: load_dataset(str(d)), "reviews_X_5.json", 2, None, "JSON object")
    write(d / "reviews_X_5.json", jsonl([good, {k: v for k, v in good.items() if k != "asin"}]))
    raises(lambda: load_dataset(str(d)), "reviews_X_5.json", 2, "asin", "missing field")
    write(d / "reviews_X_5.json", jsonl([good, dict(good, unixReviewTime="soon")]))
    raises(lambda: load_dataset(str(d)), "reviews_X_5.json", 2, "unixReviewTime", "expected a number")
    write(d / "reviews_X_5.json", "\n\n")
    raises(lambda: load_dataset(str(d)), "reviews_X_5.json", 1, None, "empty file")
    write(d / "reviews_X_5.json", jsonl([good]))
    write(d / "meta_X.json", "{'asin': 'B', 'categories': 'Beauty'}\n{'asin': 'B', 'categories': 5}\n")
    assert load_dataset(str(d)).items["categories"].iloc[0] == ["Beauty"]  # 2nd record is a duplicate: ignored
    write(d / "meta_X.json", "{'asin': 'B', 'categories': 5}\n")
    raises(lambda: load_dataset(str(d)), "meta_X.json", 1, "categories", "list of category names")
    write(d / "meta_X.json", "{'asin': 'other', 'title': 'not reviewed'}\n")
    items = load_dataset(str(d)).items
    assert list(items["item_id"]) == ["B"] and list(items["text"]) == [""]


# ---------------------------------------------------------------- real data

def test_embedded_ml100k():
    spec = importlib.util.find_spec("recbole")
    if spec is None:
        pytest.skip("recbole wheel not installed")
    ds = load_dataset("ml-100k")
    inter = ds.interactions
    assert (inter["user_id"].nunique(), inter["item_id"].nunique(), len(inter)) == (943, 1682, 100000)
    assert len(ds.items) == 1682 and len(ds.users) == 943
    assert ds.real_time is True and ds.label_hint == "rating" and ds.source.startswith("recbole:")
    assert set(inter["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    toy = ds.items.set_index("item_id").loc["1"]
    assert toy["title"] == "Toy Story (1995)" and toy["categories"] == ["Animation", "Children's", "Comedy"]


@pytest.mark.shared_data
def test_shared_ml100k():
    if not (SHARED / "ml-100k").is_dir():
        pytest.skip("../shared/data/ml-100k absent")
    ds = load_dataset(str(SHARED / "ml-100k"))
    inter = ds.interactions
    assert (inter["user_id"].nunique(), inter["item_id"].nunique(), len(inter)) == (943, 1682, 100000)
    assert ds.real_time is True


@pytest.mark.shared_data
def test_shared_amazon_beauty():
    if not (SHARED / "amazon-beauty").is_dir():
        pytest.skip("../shared/data/amazon-beauty absent")
    ds = load_dataset(str(SHARED / "amazon-beauty"))
    inter, items = ds.interactions, ds.items
    assert (inter["user_id"].nunique(), len(items), len(inter)) == (22363, 12101, 198502)
    assert inter["item_id"].nunique() == 12101
    assert ds.real_time is False and ds.label_hint == "implicit"
    assert (items["title"] == "").sum() == 7  # PROVENANCE.md: 7 items lack a title, 2,099 a brand
    assert (items["brand"] == "").sum() == 2099
    assert all(isinstance(c, list) for c in items["categories"])
    assert (items["categories"].str.len() > 0).mean() > 0.99
    assert items["categories"].map(lambda c: c[:1] == ["Beauty"] if c else True).all()


# ---------------------------------------------------------------------------- the bytes fast path of read_delimited
@pytest.mark.parametrize("text,names,fast", [
    ("user_id:token\titem_id:token\trating:float\nu1\ti1\t4\nu2\ti2\t5\n", None, True),
    ("\ufeffa\tb\nx\ty\nü\tß\n", None, True),  # BOM, non-ASCII
    ("u1\ti1\nu2\ti2", ("user", "item"), True),  # no header, no final newline
    ("a\tb\nx\ty\n\nz\tw\n", None, False),  # a blank line
    ("a\tb\nx\ty\n  \nz\tw\n", None, False),  # a whitespace-only line
    ("a\tb\r\nx\ty\r\n", None, False),  # CRLF
    ("a\tb\tc\nx\ty\nz\tw\tv\n", None, False),  # a short row: padded by the general path
    ("a,b\n\"x,1\",y\n", None, None),  # quoted (sep ,): general path
])
def test_fast_read_gives_what_the_general_path_gives(tmp_path, text, names, fast):
    from llmcf.data.loaders import table as tb

    sep = "," if text.startswith("a,b") else "\t"
    p = tmp_path / "f.tsv"
    p.write_bytes(text.encode("utf-8"))
    quoted = sep == ","
    got = tb._read_bytes_fast(p, sep, names, quoted, "utf-8")
    assert (got is not None) == bool(fast)
    header, t = tb.read_delimited(p, sep, names=names, quoted=quoted)
    orig = tb._read_bytes_fast
    try:  # the general path alone
        tb._read_bytes_fast = lambda *a, **k: None
        want_header, want = tb.read_delimited(p, sep, names=names, quoted=quoted)
    finally:
        tb._read_bytes_fast = orig
    assert header == want_header
    pd.testing.assert_frame_equal(t.df.reset_index(drop=True), want.df.reset_index(drop=True), check_dtype=False)
    assert t.lines.tolist() == want.lines.tolist()


def test_fast_read_refuses_what_is_not_utf8_and_the_general_path_falls_back(tmp_path):
    from llmcf.data.loaders import table as tb

    p = tmp_path / "latin.tsv"
    p.write_bytes("a\tb\ncaf\xe9\tx\n".encode("latin-1"))
    assert tb._read_bytes_fast(p, "\t", None, False, "utf-8") is None
    header, t = tb.read_delimited(p, "\t")
    assert header == ["a", "b"] and t.df.iloc[0, 0] == "café" and t.lines.tolist() == [2]
