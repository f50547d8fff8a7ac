"""`alexnet summary` and `alexnet diff` as a user runs them."""
import json
import subprocess
import sys

import pytest

from alexnet_parity.alexnet_cli.main import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("variant,params", [("paper", 60_965_224), ("caffe", 60_965_224), ("caffenet", 60_965_224),
                                            ("single-column", 62_378_344), ("torchvision", 61_100_840),
                                            ("slim-v2", 50_303_912)])
def test_summary_json_params(capsys, variant, params):
    code, out, _ = run_cli(capsys, "summary", variant, "--json")
    data = json.loads(out)
    assert code == 0
    assert data["variant"] == variant and data["params"] == params
    assert {"variant", "params", "macs", "neurons", "layers"} <= data.keys()
    assert sum(layer["params"] for layer in data["layers"]) == params


def test_summary_json_macs(capsys):
    assert json.loads(run_cli(capsys, "summary", "torchvision", "--json")[1])["macs"] == 714_188_480
    assert json.loads(run_cli(capsys, "summary", "caffe", "--json")[1])["macs"] == 724_406_816


def test_summary_table_and_overrides(capsys):
    code, out, _ = run_cli(capsys, "summary", "caffe", "--input-size", "256", "--num-classes", "10")
    assert code == 0
    assert "256x7x7" in out and "12544 -> 4096" in out and "4096 -> 10" in out


def test_summary_bad_size_is_one_line_error(capsys):
    code, out, err = run_cli(capsys, "summary", "paper", "--input-size", "32")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "smallest input size it takes is 52" in err


def test_summary_imports_no_framework():
    code = ("import sys; from alexnet_parity.alexnet_cli.main import main; main(['summary', 'paper', '--json']); "
            "bad = [m for m in ('torch', 'tensorflow', 'jax', 'keras', 'flax') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_diff_paper_torchvision_answers_the_classic_question(capsys):
    code, out, _ = run_cli(capsys, "diff", "paper", "torchvision")
    assert code == 0
    for line in ("[channels] conv1: 96 kernels  ->  64 kernels", "[channels] conv2: 256 kernels  ->  192 kernels",
                 "[channels] conv4: 384 kernels  ->  256 kernels", "[padding] conv1: (0,3),(0,3) ceil  ->  2",
                 "[lrn] norm1:", "[lrn] norm2:", "[groups] conv2: 2  ->  1", "[dropout] fc6",
                 "[adaptive] avgpool: none  ->  yes"):
        assert line in out, line
    flat = " ".join(out.split())  # the explanations are wrapped at 100 columns
    assert "One weird trick" in flat and "(224+2*2-11)//4+1 = 55" in flat and "no LRN" in flat


def test_diff_paper_single_column_shows_pytorch_lrn_is_not_the_papers(capsys):
    _, out, _ = run_cli(capsys, "diff", "paper", "single-column")
    assert "alpha=0.0001/n" in out and "sum scaled by 2e-05" in out and "sum scaled by 0.0001" in out
    flat = " ".join(out.split())
    assert "not the same function" in flat and "alpha=5e-4" in flat


def test_diff_json_and_identity(capsys):
    data = json.loads(run_cli(capsys, "diff", "caffe", "caffenet", "--json")[1])
    assert {d["aspect"] for d in data["differences"]} == {"order", "init"}
    assert "no differences" in run_cli(capsys, "diff", "caffe", "caffe")[1]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert all(cmd in out for cmd in ("summary", "diff", "convert", "parity", "bench"))
