"""The few-shot report's protocols on a tiny run: same supports for every method, fresh supports + best-of."""
import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fewshot_report  # noqa: E402
import fewshot_table  # noqa: E402


@pytest.fixture(scope="module")
def args(tmp_path_factory):
    return argparse.Namespace(threads=1, workers=1, cpu=True, cuda_graph=False, data_dir=None, draws=2, steps=2,
                              evaluations=2, encoder="gcn_supervised_contextpred", encoder_path=None,
                              checkpoint_dir=str(tmp_path_factory.mktemp("checkpoints")))


@pytest.fixture(scope="module")
def cells(args):
    return {method: fewshot_table.run_cell("toxcast-CLD", 5, method, 0, args)
            for method in ("pintuning", "frozen", "ecfp_aux_rf")}


def test_every_method_of_a_seed_is_scored_on_the_same_supports(cells):
    seeds = {m: tuple(c["eval_seeds"]) for m, c in cells.items()}
    supports = {m: tuple(c["supports"]) for m, c in cells.items()}
    assert len(set(seeds.values())) == 1 and len(set(supports.values())) == 1
    assert len(set(cells["frozen"]["supports"])) == 2           # two different draws
    assert all(len(c["honest"]) == 2 for c in cells.values())


def test_published_protocol_is_the_best_of_evaluations_on_fresh_supports(cells):
    pintuning = cells["pintuning"]
    evaluations = pintuning["evaluations"]
    assert len(evaluations) == 2 and len({e["eval_seed"] for e in evaluations}) == 2
    assert pintuning["published"] == max(e["roc_auc"] for e in evaluations)
    assert len(pintuning["deployment"]) == 2


def test_report_has_a_row_per_method_with_the_paper_number(cells):
    text = fewshot_report.report(list(cells.values()))
    table, budgets = text.split("## Budgets")
    table = table.split("## ToxCast, group by group")[0]
    rows = [line for line in table.splitlines() if line.startswith("| toxcast")]
    assert [line.split("|")[1].strip() for line in budgets.splitlines() if line.startswith("| toxcast")] == [
        "toxcast-CLD"] * 3                                          # budgets per group
    assert [row.split("|")[3].strip() for row in rows] == ["pintuning", "frozen", "ecfp_aux_rf"]
    assert rows[0].startswith("| toxcast (1 of 9 groups) |")       # a partial ToxCast mean says so
    assert rows[0].rstrip(" |").endswith("83.71 (all 9)")         # paper's ToxCast 5-shot, over all nine groups


def test_toxcast_mean_row_averages_the_group_rows_shown_below_it(cells):
    other = {**cells["frozen"], "dataset": "toxcast-OT", "honest": [h - 0.1 for h in cells["frozen"]["honest"]]}
    text = fewshot_report.report([cells["frozen"], other])
    mean_table, groups = text.split("## Budgets")[0].split("## ToxCast, group by group")

    def honest(table: str, dataset: str) -> float:
        row = next(line for line in table.splitlines() if line.startswith(f"| {dataset} "))
        return float(row.split("|")[7])

    assert honest(groups, "toxcast-OT") == pytest.approx(honest(groups, "toxcast-CLD") - 10, abs=0.01)
    assert honest(mean_table, "toxcast (2 of 9 groups)") == pytest.approx(honest(groups, "toxcast-CLD") - 5, abs=0.01)
    assert "## ToxCast, group by group" not in fewshot_report.report([cells["frozen"] | {"dataset": "tox21"}])


def test_toxcast_mean_covers_only_the_groups_every_seed_has(cells):
    cld = cells["frozen"]
    seed1 = {**cld, "seed": 1, "honest": [h + 0.02 for h in cld["honest"]]}
    ot_seed0_only = {**cld, "dataset": "toxcast-OT", "honest": [h - 0.3 for h in cld["honest"]]}
    row = fewshot_report.aggregate([cld, seed1, ot_seed0_only])["toxcast|5|frozen|"]
    assert row["groups"] == ["toxcast-CLD"]                      # OT lacks seed 1: left out of the mean
    assert row["per_seed"][0]["honest"] == pytest.approx(np.mean(cld["honest"]))
    assert row["per_seed"][1]["honest"] == pytest.approx(np.mean(cld["honest"]) + 0.02)
    disjoint = fewshot_report.aggregate([cld, {**seed1, "dataset": "toxcast-OT"}])
    assert "toxcast|5|frozen|" not in disjoint                   # seeds sharing no group give no mean


def test_toxcast_mean_takes_all_nine_groups_on_the_seeds_that_have_them(cells):
    cld = cells["frozen"]
    seed0 = [{**cld, "dataset": group, "honest": [h - 0.01 * i for h in cld["honest"]]}
             for i, group in enumerate(fewshot_report.TOXCAST)]
    seed1_cld = {**cld, "seed": 1}
    row = fewshot_report.aggregate([*seed0, seed1_cld])["toxcast|5|frozen|"]
    assert row["groups"] == sorted(fewshot_report.TOXCAST) and list(row["per_seed"]) == [0]
    assert row["per_seed"][0]["honest"] == pytest.approx(np.mean(cld["honest"]) - 0.04)
    mean_table = fewshot_report.report([*seed0, seed1_cld]).split("## ToxCast, group by group")[0]
    assert "| toxcast | 5 | frozen | — | 1 |" in mean_table        # no "(n of 9 groups)": the paper's mean


def test_ablation_cells_are_the_papers_tables():
    import ablations
    ten = ablations.cells_to_run(["tox21"], [0], shots=(10,))
    assert {v for _, _, v, _ in ten} == set(ablations.VARIANTS) and {s for _, s, _, _ in ten} == {10}
    both = ablations.cells_to_run(["tox21", "sider"], [0, 1])
    assert len(both) == 2 * 2 * (len(ablations.VARIANTS) + len(ablations.TABLE2))   # Table 2 also at 5 shots
    assert {v for _, s, v, _ in both if s == 5} == set(ablations.TABLE2)
    first = ablations.cells_to_run(["tox21"], [1, 2], shots=(10,), variants=["no_context", "full"])
    assert first == [("tox21", 10, "no_context", 1), ("tox21", 10, "full", 1),
                     ("tox21", 10, "no_context", 2), ("tox21", 10, "full", 2)]


def test_the_plotted_paper_values_include_the_full_model_at_both_shot_counts():
    import ablations
    assert ablations.plotted_paper_values(["full", "no_adapter", "fim"], "tox21", 5) == [90.95, 78.49, None]
    assert ablations.plotted_paper_values(["full", "efim"], "muv", 10) == [73.33, 72.78]   # Table 2's full model


def test_ablation_report_keeps_each_budget_apart(tmp_path):
    import ablations
    cell = {"dataset": "tox21", "shots": 10, "variant": "full", "seed": 0, "honest": [0.80, 0.82],
            "published": 0.85, "steps": 100, "device": "CPU", "encoder": "gcn", "training_seconds": 60.0}
    longer = {**cell, "steps": 500, "honest": [0.86, 0.88], "published": 0.9}
    text = ablations.report([cell, longer, {**longer, "seed": 1, "honest": [0.84, 0.86]}])
    rows = [line for line in text.split("## Table 3")[0].splitlines() if line.startswith("| tox21 | 10 |")
            and "| full |" in line]
    assert [r.split("|")[3].strip() for r in rows] == ["100", "500"]
    assert rows[0].split("|")[5].strip() == "81.00 (1)" and rows[1].split("|")[5].strip().startswith("86.00 ± 1.41 (2)")
    mixed = ablations.report([{**cell, "evaluations": [{"roc_auc": 0.85}] * 10},
                              {**cell, "seed": 1, "evaluations": [{"roc_auc": 0.85}] * 20}])
    assert "| tox21 | 10 | 100 | full | 81.00 ± 0.00 (2) | 85.00 ± 0.00 (2; best of 10/20) |" in mixed
    ablations.plot([cell, longer], tmp_path / "ablations.png")
    assert (tmp_path / "ablations.png").stat().st_size > 1000


def test_per_property_scores_average_to_the_honest_number_and_are_drawn(cells, tmp_path):
    for cell in cells.values():
        per_task = cell["honest_per_task"]
        assert len(per_task) >= 2 and all(len(v) == 2 for v in per_task.values())    # every property, every draw
        assert np.allclose(np.mean(list(per_task.values()), axis=0), cell["honest"])
    groups = fewshot_report.per_property(list(cells.values()))
    assert list(groups) == [("toxcast-CLD", 5)]
    assert set(groups[("toxcast-CLD", 5)]) == {"pintuning 2 steps", "frozen", "ecfp_aux_rf"}
    fewshot_report.plot(list(cells.values()), tmp_path / "table.png")
    assert (tmp_path / "table_per_property.png").stat().st_size > 1000
    fewshot_report.plot([{k: v for k, v in c.items() if k != "honest_per_task"} for c in cells.values()],
                       tmp_path / "old.png")                     # older cells: no per-property figure
    assert (tmp_path / "old.png").exists() and not (tmp_path / "old_per_property.png").exists()


def pintuning_rows(report: str) -> list:
    """The Pin-Tuning rows of a report's main table (not of its per-group or budget tables)."""
    main_table = report.split("## Budgets")[0].split("## ToxCast, group by group")[0]
    return [line for line in main_table.splitlines() if "| pintuning |" in line]


def test_a_rescored_checkpoint_scores_as_its_cell_and_gets_a_row_of_its_own(cells, args, tmp_path):
    import json
    import shutil
    folder = Path(args.checkpoint_dir) / "toxcast-CLD-5shot-gcn_supervised_contextpred-2steps-seed0"
    again = fewshot_table.rescored_cell(folder, "toxcast-CLD", 5, 0, args)
    trained = cells["pintuning"]
    for key in ("honest", "deployment", "published", "supports", "steps", "evaluations"):
        assert again[key] == trained[key], key
    # evaluations that all used one support set are no published-protocol number
    fixed = tmp_path / "fixed"
    shutil.copytree(folder, fixed)
    saved = json.loads((fixed / "history.json").read_text())
    for record in saved["history"]:
        record.pop("eval_seed", None)
    (fixed / "history.json").write_text(json.dumps(saved))
    kept_apart = fewshot_table.rescored_cell(fixed, "toxcast-CLD", 5, 0, args)
    assert "published" not in kept_apart and kept_apart["best_of_fixed_evaluations"] == trained["published"]
    # another budget is another row, in step order, its missing protocol shown as such
    longer = {**kept_apart, "steps": 2000}
    rows = [line.split("|") for line in pintuning_rows(fewshot_report.report([longer, trained]))]
    assert [(r[4].strip(), r[6].strip()) for r in rows] == [("2", f"{100 * trained['published']:.2f}"), ("2000", "—")]
    other_seed = {**kept_apart, "seed": 1}                          # same budget, one seed without that protocol
    row = pintuning_rows(fewshot_report.report([trained, other_seed]))
    assert row[0].split("|")[6].strip() == f"{100 * trained['published']:.2f} (1 of 2 seeds)"
    assert set(fewshot_report.per_property([longer, trained])[("toxcast-CLD", 5)]) == {
        "pintuning 2 steps", "pintuning 2000 steps"}
    with pytest.raises(SystemExit, match="holds a 5-shot model, not 10-shot"):
        fewshot_table.rescored_cell(folder, "toxcast-CLD", 10, 0, args)


def test_cells_of_a_meta_trained_method_are_kept_per_budget(tmp_path):
    def compute(dataset, shots, method, seed, args):
        return {"dataset": dataset, "shots": shots, "method": method, "seed": seed}

    for method, steps in (("pintuning", 100), ("pintuning", 2000), ("frozen", 100), ("frozen", 2000)):
        args = argparse.Namespace(cell_dir=str(tmp_path), steps=steps, cell=["tox21", "10", method, "0"])
        fewshot_table.run_cells("unused", args, [], compute, None, None)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [
        "tox21-10shot-frozen-seed0.json", "tox21-10shot-pintuning-100steps-seed0.json",
        "tox21-10shot-pintuning-2000steps-seed0.json"]


def test_budget_table_states_each_rows_steps_seeds_encoder_device_and_wall_time(cells):
    trained = cells["pintuning"]
    longer = {**trained, "seed": 1, "steps": 2000, "training_seconds": 7200.0}
    again = {**trained, "seed": 2, "steps": 2000, "training_seconds": 3600.0}
    rows = [line.split("|")[1:-1] for line in fewshot_report.budget_table([*cells.values(), longer, again])[2:]]
    rows = [[field.strip() for field in row] for row in rows]
    assert [row[2:5] for row in rows] == [["pintuning", "2", "1"], ["pintuning", "2000", "2"], ["frozen", "—", "1"],
                                          ["ecfp_aux_rf", "—", "1"]]
    n_evaluations, n_draws = len(trained["evaluations"]), len(trained["eval_seeds"])
    assert rows[1][5:] == [str(n_evaluations), str(n_draws), "gcn_supervised_contextpred", trained["device"],
                           "1.5 h meta-training"]
    assert rows[2][5:7] == ["—", str(len(cells["frozen"]["eval_seeds"]))]       # a baseline: no evaluations
    assert rows[3][7] == "ECFP4"
    assert rows[2][9] == fewshot_report._duration(cells["frozen"]["wall_seconds"])
    mixed = {**again, "seed": 3, "evaluations": trained["evaluations"][:1]}
    row = fewshot_report.budget_table([longer, again, mixed])[2]
    assert f"| 3 | 1, {n_evaluations} | {n_draws} |" in row
    assert fewshot_report.budget_table([])[2:] == []


def test_a_checkpoint_folder_resumes_only_the_run_it_holds(cells, args):
    import torch
    from deepchem_pintuning.data import load_fewshot
    data = load_fewshot("toxcast-CLD")

    def again(cell_args=args, **overrides):
        return fewshot_table.pintuning_cell(data, "toxcast-CLD", 5, 0, cell_args, torch.device("cpu"), [10_000],
                                            deployment=False, **overrides)

    assert again()["training_seconds"] == cells["pintuning"]["training_seconds"]      # finished: nothing retrained
    with pytest.raises(SystemExit, match=r"holds another run: eval_every 1 \(requested 2\)"):
        again(argparse.Namespace(**{**vars(args), "evaluations": 1}))
    with pytest.raises(SystemExit, match=r"holds another run: emb_bwc='identity' \(requested 'none'\)"):
        again(emb_bwc="none")


def test_ablation_differences_are_paired_on_the_same_supports_with_seeds_as_replicates():
    import ablations
    from scipy import stats

    def cell(variant, seed, honest, supports=("a", "b")):
        return {"dataset": "sider", "shots": 10, "variant": variant, "seed": seed, "steps": 100,
                "honest": honest, "supports": list(supports), "published": max(honest), "device": "CPU",
                "encoder": "gcn", "training_seconds": 60.0}
    cells = [cell("full", 0, [0.80, 0.70]), cell("no_adapter", 0, [0.84, 0.69]),     # +4, -1 -> +1.5
             cell("full", 1, [0.75, 0.75]), cell("no_adapter", 1, [0.80, 0.80]),     # +5, +5 -> +5
             cell("full", 2, [0.70, 0.70]), cell("no_adapter", 2, [0.99, 0.99], supports=("c", "d")),  # unpaired
             cell("no_adapter", 3, [0.99, 0.99])]                                     # no full model of seed 3
    row = ablations.paired_with_full(cells, "sider", 10, "no_adapter", 100)
    assert row["seeds"] == 2 and np.allclose(row["per_seed"], [1.5, 5.0]) and np.isclose(row["mean"], 3.25)
    half = stats.t.ppf(0.975, 1) * np.std([1.5, 5.0], ddof=1) / np.sqrt(2)
    assert np.allclose(row["ci95"], [3.25 - half, 3.25 + half])
    assert (row["ahead"], row["draws"]) == (3, 4)
    assert row["paper"] == round(74.04 - 93.41, 2)
    assert ablations.paired_with_full(cells, "sider", 5, "no_adapter", 100) is None
    single = ablations.paired_with_full(cells[:2], "sider", 10, "no_adapter", 100)
    assert single["ci95"] is None and np.isclose(single["mean"], 1.5)
    line = next(x for x in ablations.report(cells).splitlines() if x.startswith("| sider | 10 | 100 | no_adapter | 2 |"))
    assert line.split("|")[6:11] == [" +3.25 ", f" {3.25 - half:+.2f} to {3.25 + half:+.2f} ", " 3/4 ", " -19.37 ", " no "]
    emb = ablations.paired_with_full([cell("full", 0, [0.8]), cell("fim", 0, [0.8])], "sider", 10, "fim", 100)
    assert emb["paper"] == round(90.09 - 93.41, 2) and (emb["ahead"], emb["mean"]) == (0, 0.0)   # Table 3's numbers


def test_report_scores_every_row_of_a_seed_on_the_draws_they_all_have():
    def cell(method, honest, eval_seeds, supports, seed=0):
        return {"dataset": "tox21", "shots": 5, "method": method, "seed": seed, "eval_seeds": eval_seeds,
                "supports": supports, "honest": honest, "honest_per_task": {"NR-AR": honest},
                "device": "CPU", "encoder": "gcn", "wall_seconds": 1.0}
    five = cell("frozen", [0.6, 0.7], [10, 11], ["a", "b"])
    ten = cell("ecfp_rf", [0.5, 0.6, 0.9], [10, 11, 12], ["a", "b", "c"])
    other_seed = cell("ecfp_rf", [0.8, 0.8, 0.8], [20, 21, 22], ["d", "e", "f"], seed=1)
    cut = {(c["method"], c["seed"]): c for c in fewshot_report.on_shared_supports([five, ten, other_seed])}
    assert cut[("ecfp_rf", 0)]["honest"] == [0.5, 0.6] and cut[("ecfp_rf", 0)]["supports"] == ["a", "b"]
    assert cut[("ecfp_rf", 0)]["honest_per_task"] == {"NR-AR": [0.5, 0.6]} and cut[("frozen", 0)] == five
    assert cut[("ecfp_rf", 1)]["honest"] == [0.8] * 3                    # no other method on seed 1: all draws
    assert ten["honest"] == [0.5, 0.6, 0.9]                                # the cells themselves are not changed
    text = fewshot_report.report([five, ten, other_seed])
    row = next(line for line in text.splitlines() if line.startswith("| tox21 | 5 | ecfp_rf |"))
    assert row.split("|")[7].strip() == f"{100 * np.mean([0.55, 0.8]):.2f} ± {100 * np.std([0.55, 0.8], ddof=1):.2f}"
    assert "tox21 5-shot 2 or 3 (by seed)" in text
    assert np.isclose(fewshot_report.per_property([five, ten])[("tox21", 5)]["ecfp_rf"]["NR-AR"], 0.55)
    with pytest.raises(ValueError, match="evaluation seed 11"):
        fewshot_report.on_shared_supports([five, {**ten, "supports": ["a", "x", "c"]}])


def test_generalisation_gap_scores_the_training_properties_beside_the_reports_test_numbers(cells, args):
    import json

    import generalisation_gap
    from deepchem_pintuning.data import load_fewshot
    from deepchem_pintuning.episodes import evaluation_episodes
    folder = Path(args.checkpoint_dir) / "toxcast-CLD-5shot-gcn_supervised_contextpred-2steps-seed0"
    gap = generalisation_gap.gap_cell(folder, 2, args)
    assert (gap["dataset"], gap["shots"], gap["steps"], gap["seed"]) == ("toxcast-CLD", 5, 2, 0)
    # the test properties on the report's draws are the report's numbers, for Pin-Tuning and the baseline
    assert gap["pintuning_test"] == cells["pintuning"]["honest"] and gap["frozen_test"] == cells["frozen"]["honest"]
    assert gap["pintuning_train"] != gap["pintuning_test"] and gap["frozen_train"] != gap["frozen_test"]
    # a training property is scored without itself as context
    data = load_fewshot("toxcast-CLD")
    for episode in evaluation_episodes(generalisation_gap.as_test(data, data.train_tasks), 5, gap["eval_seeds"][0]):
        assert episode.task_index not in episode.aux_task_indices
    row = generalisation_gap.report([gap]).splitlines()[-1].split("|")
    difference = 100 * (np.mean(gap["pintuning_train"]) - np.mean(gap["pintuning_test"]))
    assert row[7].strip() == f"{difference:+.1f}" and row[11].strip() == "128" and row[12].strip() == "—"
    losses = [r["query_bce"] for r in json.loads((folder / "history.json").read_text())["history"] if "query_bce" in r]
    loss = gap["training_query_bce"]
    assert len(losses) == 2 and loss["first"] == loss["last"] == pytest.approx(np.mean(losses))
    assert row[10].strip() == f"{loss['first']:.3f} → {loss['last']:.3f}"
    # another query chunk size scores the same test properties on the same draws; the model's own reproduces them
    chunked = generalisation_gap.add_query_chunks(folder, dict(gap), [16, 128], args)["pintuning_test_by_query_chunk"]
    assert chunked["128"] == gap["pintuning_test"] and chunked["16"] != gap["pintuning_test"]


def test_paper_numbers_mark_pintuning_rows_only():
    keys = ["tox21|10|pintuning|2000", "tox21|5|frozen|", "toxcast|5|pintuning|500", "muv|5|pintuning|100"]
    assert fewshot_report.paper_numbers(keys) == [91.56, None, 83.71, 70.71]
