"""`alexnet parity` as the README's main job runs it: table, JSON, chart, and --convert through the files."""
import json

import pytest

from alexnet_parity.alexnet_cli.main import main

pytest.importorskip("torch")


def test_convert_path_keeps_an_input_size_the_state_dict_cannot_record(tmp_path, capsys):
    # paper at 224 and at 227 hold the same tensor shapes: a torch file alone reads back as 224
    out = tmp_path / "p.json"
    code = main(["parity", "paper", "--input-size", "227", "--frameworks", "torch", "--convert",
                 "--json", str(out), "--plot", str(tmp_path / "p.png")])
    text = capsys.readouterr()
    assert code == 0, text.err
    assert "bit-identical" in text.err and "PASS" in text.out
    data = json.loads(out.read_text())
    assert data["convert"] is True and data["results"][0]["overrides"] == {"input_size": 227}
    assert 0 < data["results"][0]["max_error"] < 1e-5
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_unknown_framework_is_a_one_line_error(capsys):
    assert main(["parity", "paper", "--frameworks", "mxnet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mxnet" in err
