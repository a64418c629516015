"""The bad-input corpus of `llmcf data build`: hand-made broken files, each refused with one clear `llmcf: error:`
line naming the file / line / field, no traceback, exit code 1, and nothing left in the run directory.

Every case writes its files into a fresh folder, runs the real CLI in-process and checks all four properties."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from llmcf.cli import main

H3 = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


def rows(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def good_rows(n_users: int = 3, n_items: int = 4, start: int = 0) -> list[str]:
    """Enough rows for every split: each user rates every item once, ratings alternate 5/1."""
    out = []
    for u in range(n_users):
        for i in range(n_items):
            out.append(f"u{u}\ti{i}\t{5 if (u + i) % 2 else 1}\t{start + i}")
    return out


def atomic(**files: str):
    """Case writer: RecBole atomic files d/x.<ext> (ext = inter, item, user)."""
    def write(root: Path) -> list[str]:
        d = root / "d"
        d.mkdir()
        for ext, text in files.items():
            (d / f"x.{ext}").write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
        return ["--dataset", str(d)]
    return write


def files(**named):
    """Case writer: arbitrary files in d/ (names with '__' for '.', values str or bytes; '.gz' names gzipped)."""
    def write(root: Path) -> list[str]:
        d = root / "d"
        d.mkdir()
        for name, text in named.items():
            name = name.replace("__", ".")
            data = text.encode("utf-8") if isinstance(text, str) else text
            if name.endswith(".gz") and not name.startswith("notgz"):
                data = gzip.compress(data)
            (d / name.removeprefix("notgz")).write_bytes(data)
        return ["--dataset", str(d)]
    return write


def with_args(writer, *args: str):
    def write(root: Path) -> list[str]:
        return writer(root) + list(args)
    return write


def jl(*recs) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs)


def review(u="U1", i="A1", r=5.0, t=1000, **kw):
    return {"reviewerID": u, "asin": i, "overall": r, "unixReviewTime": t, **kw}


GOOD = rows(H3, *good_rows())
ITEMS = rows("item_id:token\ttitle:token", *(f"i{i}\tTitle {i}" for i in range(4)))
DEEP = "[" * 5000 + "]" * 5000
U_ITEM = "".join(f"{i}|Movie {i}|01-Jan-1995||http://x|" + "|".join(["0"] * 18 + ["1"]) + "\n" for i in range(4))
U_DATA = "".join(f"{u}\t{i}\t{5 if (u + i) % 2 else 1}\t{100 + i}\n" for u in range(1, 4) for i in range(4))

# (case id, writer, words the message must contain)
CASES = [
    # ---- RecBole atomic: file structure
    ("atomic-empty-inter", atomic(inter=""), ["x.inter", "line 1", "empty file"]),
    ("atomic-header-only", atomic(inter=rows(H3)), ["x.inter", "expected at least one data row"]),
    ("atomic-header-without-types", atomic(inter=rows("user_id\titem_id", "u\ti")), ["line 1", "name:type"]),
    ("atomic-comma-header", atomic(inter=rows("user_id:token,item_id:token", "u,i")),
     ["line 1", "tab", "comma-separated"]),
    ("atomic-comma-rows", atomic(inter=rows(H3, "u1,i1,5,1", "u1,i2,4,2")), ["line 2", "comma-separated"]),
    ("atomic-semicolon-rows", atomic(inter=rows(H3, "u1;i1;5;1")), ["line 2", "semicolon-separated"]),
    ("atomic-duplicate-header-field", atomic(inter=rows("user_id:token\tuser_id:token", "u\tv")),
     ["line 1", "field 'user_id'", "twice"]),
    ("atomic-unknown-type", atomic(inter=rows("user_id:string\titem_id:token", "u\ti")), ["line 1", "name:type"]),
    ("atomic-no-item-column", atomic(inter=rows("user_id:token\trating:float", "u\t1")),
     ["field 'item_id'", "missing required column"]),
    ("atomic-too-many-fields", atomic(inter=rows(H3, *good_rows(), "u9\ti1\t5\t1\textra")),
     ["line 14", "expected 4 fields"]),
    # ---- atomic: values
    ("atomic-empty-user-id", atomic(inter=rows(H3, "u1\ti1\t5\t1", "\ti2\t4\t2")),
     ["line 3", "field 'user_id'", "empty id"]),
    ("atomic-nul-in-user-id", atomic(inter=rows(H3, "u1\ti1\t5\t1", "u\x002\ti2\t4\t2")),
     ["line 3", "field 'user_id'", "U+0000"]),
    ("atomic-escape-in-item-id", atomic(inter=rows(H3, "u1\ti\x1b[31m1\t5\t1")),
     ["line 2", "field 'item_id'", "U+001B"]),
    ("atomic-del-in-item-id", atomic(inter=rows(H3, "u1\ti\x7f1\t5\t1")), ["line 2", "U+007F"]),
    ("atomic-rating-not-number", atomic(inter=rows(H3, "u1\ti1\tfive\t1")),
     ["line 2", "field 'rating'", "expected a number", "'five'"]),
    ("atomic-rating-infinite", atomic(inter=rows(H3, "u1\ti1\tinf\t1")), ["line 2", "field 'rating'"]),
    ("atomic-timestamp-empty", atomic(inter=rows(H3, "u1\ti1\t5\t")), ["line 2", "field 'timestamp'"]),
    ("atomic-label-two", atomic(inter=rows("user_id:token\titem_id:token\tlabel:float", "u\ti\t2")),
     ["line 2", "field 'label'", "0 or 1"]),
    ("atomic-bare-cr-in-quoted-field",
     atomic(inter=GOOD, item=rows("item_id:token\ttitle:token", 'i0\t"Title\r0"', "i1\tb", "i2\tc", "i3\td")),
     ["x.item", "line 2", "carriage return"]),
    ("atomic-duplicate-item", atomic(inter=GOOD, item=rows("item_id:token\ttitle:token", "i0\ta", "i0\tb")),
     ["x.item", "line 3", "duplicate item id", "line 2"]),
    ("atomic-unknown-item", atomic(inter=GOOD, item=rows("item_id:token\ttitle:token", "i0\ta")),
     ["x.inter", "absent from the item table"]),
    ("atomic-price-not-number", atomic(inter=GOOD, item=ITEMS.replace("title:token", "title:token\tprice:float")
                                       .replace("Title 2", "Title 2\tcheap")),
     ["x.item", "line 4", "field 'price'"]),
    ("atomic-categories-unclosed",
     atomic(inter=GOOD, item=rows("item_id:token\tcategories:token_seq", "i0\t['Beauty', 'Ma")),
     ["x.item", "line 2", "field 'categories'", "quoted names"]),
    ("atomic-float-seq-bad", atomic(inter=GOOD, item=rows("item_id:token\temb:float_seq", "i0\t1 2 x")),
     ["x.item", "line 2", "field 'emb'", "space-separated numbers"]),
    ("atomic-duplicate-user", atomic(inter=GOOD, user=rows("user_id:token\tage:token", "u0\t1", "u0\t2")),
     ["x.user", "line 3", "duplicate user id"]),
    # ---- content the later stages cannot use
    ("all-ratings-positive", atomic(inter=rows(H3, *(r.replace("\t1\t", "\t5\t") for r in good_rows()))),
     ["every one of the", "label 1", "data.rating_threshold", "field 'rating'"]),
    ("label-column-all-zero",
     atomic(inter=rows("user_id:token\titem_id:token\tlabel:float\ttimestamp:float",
                       *(f"u{u}\ti{i}\t0\t{i}" for u in range(3) for i in range(4)))),
     ["label 0", "both 0 and 1", "field 'label'"]),
    ("every-user-one-row", atomic(inter=rows(H3, *(f"u{u}\ti{u % 4}\t{5 if u % 2 else 1}\t1" for u in range(8)))),
     ["valid split is empty", "8 of 8 users have fewer than 3 rows"]),
    ("one-row-dataset", atomic(inter=rows(H3, "u1\ti1\t5\t1")), ["split is empty", "1 of 1 users"]),
    ("valid-ratio-zero", with_args(atomic(inter=GOOD), "--set", "data.split_ratio=[0.9,0,0.1]"),
     ["valid split is empty", "ratio in data.split_ratio is 0"]),
    ("duplicates-under-error", with_args(atomic(inter=rows(H3, *good_rows(), "u1\ti2\t5\t2")),
                                         "--set", "data.on_duplicate=error"),
     ["x.inter", "line 14", "exact duplicate interaction", "repeats line 8"]),
    ("duplicate-policy-unknown", with_args(atomic(inter=GOOD), "--set", "data.on_duplicate=keep"),
     ["field 'data.on_duplicate'", "drop | error"]),
    ("time-split-on-positions",
     with_args(atomic(inter=rows(H3, *good_rows())), "--set", "data.split=time"), ["field 'data.split'", "real_time"]),
    ("split-unknown", with_args(atomic(inter=GOOD), "--set", "data.split=random"), ["field 'data.split'", "loo"]),
    # ---- MovieLens raw folders
    ("movielens-comma-u-data", files(u__data=U_DATA.replace("\t", ",")), ["u.data", "line 1", "comma-separated"]),
    ("movielens-missing-field", files(u__data="1\t1\t5\n"), ["u.data", "line 1", "field 'timestamp'"]),
    ("movielens-genre-flag", files(u__data=U_DATA, u__item=U_ITEM.replace("|1\n", "|2\n", 1)),
     ["u.item", "line 1", "genre flag"]),
    ("movielens-unknown-movie", files(u__data=U_DATA + "1\t99\t5\t1\n", u__item=U_ITEM),
     ["u.data", "absent from the item table", "'99'"]),
    ("movielens-dat-tab-separated", files(ratings__dat=U_DATA), ["ratings.dat", "line 1", "'::'", "tab-separated"]),
    # ---- Amazon JSON lines
    ("amazon-not-json", files(reviews_Beauty_5__json="{not json}\n"), ["reviews_Beauty_5.json", "line 1", "JSON"]),
    ("amazon-deep-nesting", files(reviews_Beauty_5__json=jl(review(), DEEP)), ["line 2", "nested deeper than 64"]),
    ("amazon-deep-object", files(reviews_Beauty_5__json=jl('{"a":' * 3000 + "1" + "}" * 3000)),
     ["line 1", "nested deeper"]),
    ("amazon-huge-line", files(reviews_Beauty_5__json=jl(review(text="x" * (5 << 20)))),
     ["line 1", "characters", "at most"]),
    ("amazon-array-line", files(reviews_Beauty_5__json=jl(review(), [1, 2])), ["line 2", "expected an object"]),
    ("amazon-missing-rating", files(reviews_Beauty_5__json=jl(review(), {"reviewerID": "U", "asin": "A"})),
     ["line 2", "field 'overall'", "missing field"]),
    ("amazon-id-is-a-list", files(reviews_Beauty_5__json=jl(review(u=["U1"]))),
     ["line 1", "field 'reviewerID'", "found list"]),
    ("amazon-id-is-bool", files(reviews_Beauty_5__json=jl(review(i=True))), ["line 1", "field 'asin'", "found bool"]),
    ("amazon-nul-in-id", files(reviews_Beauty_5__json=jl(review(u="U\x001"))), ["line 1", "U+0000"]),
    ("amazon-not-gzip", files(notgzreviews_Beauty_5__json__gz="plain text"), ["reviews_Beauty_5.json.gz", "gzip"]),
    ("amazon-empty-reviews", files(reviews_Beauty_5__json="\n\n"), ["empty file"]),
    ("amazon-meta-categories-dict",
     files(reviews_Beauty_5__json=jl(*(review(u=f"U{u}", i=f"A{i}", t=i) for u in range(3) for i in range(4))),
           meta_Beauty__json=jl({"asin": "A1", "categories": {"a": 1}})),
     ["meta_Beauty.json", "line 1", "field 'categories'", "list of category names"]),
    ("amazon2023-bad-timestamp",
     files(Beauty__jsonl=jl({"user_id": "U", "parent_asin": "A", "rating": 5, "timestamp": "soon"})),
     ["Beauty.jsonl", "line 1", "field 'timestamp'"]),
    # ---- arguments
    ("dataset-missing", lambda root: ["--dataset", str(root / "nowhere")], ["nowhere", "no such file or folder"]),
    ("dataset-unknown-format", files(readme__txt="hello"), ["no known data format"]),
    ("format-unknown", with_args(atomic(inter=GOOD), "--format", "parquet"), ["unknown format", "data.format"]),
    ("format-mismatch", with_args(atomic(inter=GOOD), "--format", "amazon2014"), ["no amazon2014 data found"]),
    ("set-unknown-field", with_args(atomic(inter=GOOD), "--set", "data.colour=red"), ["colour"]),
]


@pytest.mark.parametrize("case,writer,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error_and_leaves_nothing(case, writer, words, tmp_path, capsys):
    args = writer(tmp_path)
    out = tmp_path / "run"
    rc = main(["data", "build", "--out", str(out), *args])
    err = capsys.readouterr().err
    assert rc == 1, err
    last = [line for line in err.splitlines() if line.startswith("llmcf: error: ")]
    assert len(last) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in last[0], (w, last[0])
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize("kind", ["file", "under-file"])
def test_out_naming_a_file(kind, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    out = target if kind == "file" else target / "run"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.inter").write_text(GOOD)
    rc = main(["data", "build", "--out", str(out), "--dataset", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert err.startswith("llmcf: error: ") and str(target) in err and "file" in err
    assert target.read_text() == "keep me"


def test_run_out_naming_a_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    assert main(["run", "--config", "demo", "--out", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llmcf: error: ") and "existing file" in err and "Traceback" not in err
    assert target.read_text() == "keep me"


def test_bad_rebuild_keeps_the_finished_build(tmp_path, capsys):
    """A rejected rebuild into a run directory touches none of the files of the build that finished there."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.inter").write_text(GOOD)
    out = tmp_path / "run"
    assert main(["data", "build", "--out", str(out), "--dataset", str(d)]) == 0
    before = {p.name: p.read_bytes() for p in (out / "data").iterdir()}
    (d / "x.inter").write_text(rows(H3, "u1\ti1\t5\t1"))
    assert main(["data", "build", "--out", str(out), "--dataset", str(d)]) == 1
    assert "split is empty" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (out / "data").iterdir()} == before


def test_duplicates_are_dropped_and_counted(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.inter").write_text(rows(H3, *good_rows(), "u1\ti2\t5\t2", "u1\ti2\t5\t2"))
    out = tmp_path / "run"
    assert main(["data", "build", "--out", str(out), "--dataset", str(d)]) == 0
    stats = json.loads((out / "data" / "stats.json").read_text())
    assert stats["duplicates_dropped"] == 2
    assert stats["interactions"] == len(good_rows())
    assert sum(s["rows"] for s in stats["splits"].values()) == len(good_rows())


def test_train_refuses_an_unfinished_or_mixed_build(tmp_path, capsys):
    """A folder left by an interrupted build (no stats.json), or mixing files of two builds, is never trained on."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.inter").write_text(rows(H3, *good_rows(n_users=6, n_items=6)))
    other, out = tmp_path / "other", tmp_path / "run"
    assert main(["data", "build", "--out", str(out), "--dataset", str(d)]) == 0
    assert main(["data", "build", "--out", str(other), "--dataset", str(d), "--set", "data.history_len=2"]) == 0
    train = ["train", "--run", str(out), "--model", "DIN", "--seeds", "1", "--quiet", "--set", "train.max_epochs=1"]
    capsys.readouterr()

    (out / "data" / "train.parquet").write_bytes((other / "data" / "train.parquet").read_bytes())  # mixed
    assert main(train) == 1
    err = capsys.readouterr().err
    assert "train.parquet: not the file the last finished build wrote" in err and "llmcf data build" in err

    (out / "data" / "stats.json").unlink()  # what a build killed midway leaves
    assert main(train) == 1
    assert "the data build did not finish" in capsys.readouterr().err
    assert not (out / "models").exists()

    assert main(["data", "build", "--out", str(out), "--dataset", str(d)]) == 0
    assert main(train) == 0
    assert (out / "models" / "DIN" / "summary.json").exists()
