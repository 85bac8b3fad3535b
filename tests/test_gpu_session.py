"""The prepared GPU session (benchmarks/gpu_session.sh) checked here, where no GPU is: its shell parses,
what it carries is kept out of git, its GPU-only benchmarks refuse a machine without CUDA in one line,
and speed.py's timing and the probe's dense variant work."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import pytest  # noqa: E402
import speed  # noqa: E402
import torch  # noqa: E402


def test_the_session_script_parses_and_names_the_carry_that_git_ignores():
    script = ROOT / "benchmarks" / "gpu_session.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "prepare_gpu_carry.sh")]).returncode == 0
    assert ".gpu_carry" in script.read_text()
    ignored = subprocess.run(["git", "check-ignore", "-q", ".gpu_carry/rdkit.whl"], cwd=ROOT)
    assert ignored.returncode == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("command", [["speed.py", "--only", "gpu"], ["cuda_graph_probe.py", "probe.json"],
                                     ["profile_step.py", "--cuda-graph", "probe.json"]])
def test_gpu_only_benchmarks_without_cuda_are_a_one_line_error(command, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / command[0]), *command[1:]],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].endswith("CUDA is not available on this machine")
    assert not (tmp_path / "probe.json").exists()


def test_speed_times_the_steps_inside_one_fit_call():
    config = {"name": "fast, 1 thread", "fast": True, "threads": 1, "workers": 1, "per_pass": 1, "evaluate": False}
    result = speed.child(config, steps=2)
    assert len(result["step_seconds"]) == 2 and all(s > 0 for s in result["step_seconds"])
    assert result["fit_seconds"] >= sum(result["step_seconds"])          # the call adds its set-up and checkpoint


def test_the_probes_dense_variant_computes_the_same_products():
    """cuda_graph_probe's dense variant stores the operators densely; products and gradients are unchanged."""
    import cuda_graph_probe
    from deepchem_pintuning.sparse_products import SparseOperator

    class Patched(SparseOperator):   # the probe patches the product class; here a subclass, to leave it alone
        pass

    cuda_graph_probe.store_dense(Patched)
    index, table = torch.tensor([2, 0, 2]), torch.randn(4, 3, requires_grad=True)
    dense = Patched.one_hot(index, 4)
    assert dense.matrix.layout == torch.strided and SparseOperator.one_hot(index, 4).matrix.is_sparse
    (dense @ table).pow(2).sum().backward()
    assert torch.equal(table.grad, torch.autograd.grad(table[index].pow(2).sum(), table)[0])


def test_the_speed_table_says_how_many_steps_were_replayed():
    runs = [{"config": {"name": "reference, GPU", "device": "cuda"}, "step_seconds": [1.0, 1.2], "peak_rss_mb": 1,
             "eval_seconds": 2.0},
            {"config": {"name": "fast, GPU, one batch, replayed CUDA graph", "device": "cuda"},
             "step_seconds": [0.5, 0.05, 0.04], "peak_rss_mb": 1, "replayed_steps": 2}]
    rows = speed.summarise(runs)
    text = speed.table({"summary": rows, "runs": runs, "machine": "x", "torch": "t", "rounds": 1, "steps": 3})
    assert "replayed CUDA graph; 2 of 3 steps replayed | 0.05 (0.04-0.50) | 22.00x |" in text
    assert "reference, GPU |" in text and "reference, GPU;" not in text
