"""utils.adventure: the generic harness (collect, label, probe, pairs, patch, steer), the DoorKey
agents it is demonstrated on, and the project kit."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from utils.adventure import harness as H
from utils.adventure import project
from utils.core import CourseError
from utils.interp.adapters import adapt


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _cartpole_agent(seed=0):
    """A fixed rule in a network: push the cart the way the pole leans (obs[2] > 0 -> action 1)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.zero_()
        net[0].weight[0, 2], net[0].weight[1, 2] = 10.0, -10.0
        net[2].weight.zero_()
        net[2].bias.zero_()
        net[2].weight[1, 0], net[2].weight[0, 1] = 1.0, 1.0
    return adapt(net, example_obs=torch.zeros(1, 4))


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    agent = _cartpole_agent()
    return agent, H.collect(agent, "CartPole-v1", n_episodes=8, seed=0, greedy=True, progress=False,
                            state_fn=lambda env: {"angle": float(env.unwrapped.state[2])})


def test_collect_records_every_step(data):
    agent, d = data
    n = len(d)
    assert d.obs.shape == (n, 4) and d.logits.shape == (n, 2) and d.value is None
    assert d.action.shape == d.episode.shape == d.step.shape == d.reward.shape == (n,)
    assert torch.equal(d.action, d.greedy)                       # greedy=True
    assert torch.equal(d.logits, agent(d.obs))                    # the logits of the observation recorded
    assert set(d.acts) == set(agent.hook_dict) - {"hook_value"} and torch.equal(d.acts["1.hook_out"], agent.module[1](agent.module[0](d.obs)))
    assert d.episode.unique().tolist() == list(range(8)) and len(d.returns) == 8
    assert all(np.isclose(i["angle"], float(o[2]), atol=1e-6) for i, o in zip(d.info, d.obs))   # state_fn before the step
    again = H.collect(agent, "CartPole-v1", n_episodes=8, seed=0, greedy=True, progress=False)
    assert torch.equal(again.obs, d.obs)                          # seeded


def test_label_probe_pairs_patch_steer(data):
    agent, d = data
    y = H.label(d, lambda info, obs: info["angle"] > 0)
    assert torch.equal(y, (d.obs[:, 2] > 0).long())
    f = H.probe_variable(agent, d, y, "1.hook_out")
    assert f.value[0] > 0.9 and f.beats_control and "random-init agent" in f.other_controls
    assert "held-out episodes" in f.unit and "probe accuracy" in str(f)
    pairs = H.counterfactual_pairs(d, y, n_pairs=40)
    lab = y[pairs["clean_idx"]], y[pairs["corrupt_idx"]]
    assert (lab[0] == 1).all() and (lab[1] == 0).all() and (pairs["a_clean"] != pairs["a_corrupt"]).all()
    assert torch.all(pairs["distance"][1:] >= pairs["distance"][:-1])
    # the nearest: no other eligible observation is closer to the first clean observation
    x = d.obs.reshape(len(d), -1)
    i = pairs["clean_idx"][0]
    ok = (y == 0) & (d.greedy != d.greedy[i])
    assert torch.isclose((x[ok] - x[i]).abs().sum(1).min(), pairs["distance"][0].double().float(), atol=1e-5)
    p = H.patch_pairs(agent, pairs, "1.hook_out", k=2)
    assert p.value[0] > p.control[0] and "held-out pairs" in p.unit
    s = H.steer_variable(agent, d, y, pairs, "1.hook_out", scales=(1.0, 3.0))
    assert set(s.detail["per_scale"]) == {1.0, 3.0} and s.beats_control
    assert set(s.detail["per_scale"][1.0]) == {"gap_direction", "gap_random", "hits_direction", "hits_random"}
    assert int(s.detail["test_pairs"].sum()) == int(s.unit.split()[0])
    capped = H.counterfactual_pairs(d, y, n_pairs=10, seed=1)
    assert len(capped["clean"]) == 10 and torch.equal(capped["distance"], pairs["distance"][:10])


def test_nearest_counterfactual_small_case():
    x = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    labels = torch.tensor([1, 0, 0, 1])
    actions = torch.tensor([0, 0, 1, 0])
    idx, dist = H.nearest_counterfactual(x, labels, actions)
    assert idx.tolist() == [2, 2] and dist.tolist() == [3.0, 7.0]    # row 1 has the same action: skipped
    idx, dist = H.nearest_counterfactual(x, labels, torch.zeros(4, dtype=torch.long))
    assert idx.tolist() == [-1, -1] and torch.isinf(dist).all()


def test_steering_hits_adds_the_direction():
    agent = _cartpole_agent()
    obs = torch.tensor([[0.0, 0.0, -0.5, 0.0], [0.0, 0.0, 0.5, 0.0]])
    hits = H.steering_hits(agent, "1.hook_out", obs, torch.tensor([1, 1]), torch.tensor([100.0] + [0.0] * 15), 1.0)
    assert hits.tolist() == [1.0, 1.0]
    assert H.steering_hits(agent, "1.hook_out", obs, torch.tensor([1, 1]), torch.zeros(16), 1.0).tolist() == [0.0, 1.0]


def test_bad_input_is_one_line(data):
    agent, d = data
    cases = [(lambda: H.gym_env("CartPole-v9"), r"not a registered Gymnasium id.*CartPole-v1"),
             (lambda: H.collect(agent, "NoSuchEnv-v0", 1), "not a registered"),
             (lambda: H.collect(agent, "CartPole-v1", 0), "n_episodes"),
             (lambda: H.collect(agent, "CartPole-v1", 1, hooks=["layer9"]), r"unknown hook name.*1.hook_out"),
             (lambda: H.label(d, lambda info, obs: info["has_key"]), r"variable function failed on step 0 of episode 0 "
                                                                     r"with KeyError.*info keys are \['angle'\]"),
             (lambda: H.label(d, lambda info, obs: 0.5), "bool or a class index"),
             (lambda: H.counterfactual_pairs(d, torch.zeros(len(d), dtype=torch.long)), "only one value"),
             (lambda: H.probe_variable(agent, d, torch.zeros(3), "1.hook_out"), "one entry per step"),
             (lambda: H.patch_pairs(agent, {"clean": d.obs}, "1.hook_out"), "counterfactual_pairs")]
    for fn, match in cases:
        with pytest.raises(CourseError, match=match) as e:
            fn()
        assert "\n" not in str(e.value)


def test_doorkey_state_and_shipped_agents():
    from utils.adventure import doorkey as D

    env = D.make_doorkey()
    obs, _ = env.reset(seed=3)
    st = D.doorkey_state(env)
    assert obs.shape == (147,) and not st["has_key"] and not st["door_open"] and st["key_pos"] is not None
    assert D.target_side(st) in (0, 1, 2, 3)
    model, entry = D.load_shipped(0)
    assert entry["metrics"]["greedy_success_100"] > 0.8 and "python -m utils.adventure.doorkey" in entry["command"]
    assert D.greedy_success(adapt(model), 5, seed=10_000).mean() > 0.5


def test_project_template_passes_the_notebook_checks(tmp_path):
    from utils.course.check import notebook_problems
    from utils.course.setup_cell import setup_cell_source

    path = project.write_project_notebook(tmp_path / "notebooks" / "my_project.ipynb")
    assert notebook_problems(path, setup_cell_source()) == []
    nb = json.loads(path.read_text())
    text = "".join("".join(c["source"]) for c in nb["cells"])
    for section in project.SECTIONS:
        assert section in text
    assert "from utils.adventure.harness import" in text and "adapt(" in text
    w = project.write_writeup(tmp_path / "writeup.md")
    assert all(h in w.read_text() for h in project.WRITEUP_HEADINGS)
    with pytest.raises(CourseError, match="exists"):
        project.write_project_notebook(path)


def test_add_finding_row_pairs_seeds_bounds_and_reports_ceilings():
    """The project kit's verdict row: a paired difference over seeds inside its range, decided
    against 0; a saturated metric reads 'at ceiling'; one seed uses the within-run difference."""
    from utils.adventure.harness import Finding
    from utils.adventure.project import add_finding_row
    from utils.stats import AT_CEILING, HELD, RATE
    from utils.verdicts import VerdictTable

    def f(v, c, diff=None):
        return Finding("probe", (v, v - 0.02, v + 0.02), "shuffled labels", (c, c - 0.02, c + 0.02),
                       "held-out states", difference=diff, other_controls={"random-init agent": (0.6, 0.55, 0.65)})

    t = VerdictTable()
    row = add_finding_row(t, "probe beats shuffled labels", [f(0.9, 0.5), f(0.85, 0.52), f(0.88, 0.49)], bounds=RATE)
    assert row.verdict == HELD and row.unit.startswith("training seeds") and -1 <= row.interval[1] <= row.interval[2] <= 1
    sat = add_finding_row(t, "saturated", [f(1.0, 1.0), f(1.0, 0.995), f(1.0, 1.0)], bounds=RATE)
    assert sat.verdict == AT_CEILING
    worse = add_finding_row(t, "no better than random init", [f(0.6, 0.5), f(0.62, 0.5), f(0.61, 0.5)],
                            control="random-init agent", bounds=RATE)
    assert worse.verdict != HELD and "random-init agent" in worse.controls
    one = add_finding_row(t, "one seed", [f(0.9, 0.5, diff=(0.4, 0.35, 0.45))])
    assert one.verdict == HELD and "within-run" in one.unit
    with pytest.raises(CourseError):
        add_finding_row(t, "unknown control", [f(0.9, 0.5)], control="nope")
    with pytest.raises(CourseError):
        add_finding_row(t, "nothing", [])


def test_pairs_matched_on_a_nuisance_and_specific_steering_controls(data):
    """Pairs matched on step count differ in it by at most max_gap; steering_controls measures the
    nuisance directions, shuffled labels and variance-matched random directions on the SAME held-out
    pairs as the claim, and the has-angle direction beats shuffled labels and random directions."""
    from utils.interp.controls import SHUFFLED, VARIANCE_MATCHED

    agent, d = data
    y = H.label(d, lambda info, obs: info["angle"] > 0)
    matched = H.counterfactual_pairs(d, y, match=d.step, max_gap=3)
    gap = (d.step[matched["clean_idx"]] - d.step[matched["corrupt_idx"]]).abs()
    assert len(gap) > 8 and int(gap.max()) <= 3
    loose = H.counterfactual_pairs(d, y)
    assert (d.step[loose["clean_idx"]] - d.step[loose["corrupt_idx"]]).abs().max() > 3
    steer = H.steer_variable(agent, d, y, matched, "1.hook_out", scales=(1.0, 3.0))
    late = (d.step > d.step.float().median()).long()
    ctrl = H.steering_controls(agent, d, y, matched, "1.hook_out", steer, scales=(1.0, 3.0),
                               nuisance={"late in the episode": late, "constant": torch.zeros(len(d), dtype=torch.long)})
    assert set(ctrl) == {"nuisance: late in the episode", SHUFFLED, VARIANCE_MATCHED, H.ISOTROPIC}
    assert all(isinstance(v, float) for v in ctrl.values())
    assert steer.value[0] > ctrl[SHUFFLED] and steer.value[0] > ctrl[VARIANCE_MATCHED]
    assert ctrl[H.ISOTROPIC] == steer.control[0]


def test_episode_probe_splits_by_episode():
    """A label constant within each episode, activations that only identify the episode: a split by
    step would memorise episodes (near 1); the split by episode is near chance."""
    g = torch.Generator().manual_seed(0)
    n_ep, per = 40, 10
    codes = torch.randn(n_ep, 6, generator=g)
    episodes = torch.arange(n_ep).repeat_interleave(per)
    obs = codes[episodes] + 0.01 * torch.randn(n_ep * per, 6, generator=g)
    labels = torch.randint(0, 2, (n_ep,), generator=g)[episodes]
    agent = adapt(nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 2)), example_obs=obs[:1])
    acc = H.episode_probe(agent, obs, labels, episodes, "1.hook_out", seed=0)
    leaky = float(__import__("utils.interp.probes", fromlist=["x"]).train_probe(
        agent.run_with_cache(obs)[1]["1.hook_out"], labels, test_frac=0.5, seed=0).test_acc)
    assert acc < 0.75 < leaky


def test_hub_agent_loads_offline_from_a_fixture_in_the_cache_layout(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    from utils.adventure import hub

    summary = hub.write_hub_fixture(tmp_path / "hub")
    assert summary["files"] == ["ppo-MiniGrid-DoorKey-5x5-v0.zip", "vec_normalize.pkl"]
    snap = tmp_path / "hub" / "models--sb3--ppo-MiniGrid-DoorKey-5x5-v0" / "snapshots"
    assert len(list(snap.iterdir())) == 1 and (snap.parent / "refs" / "main").exists()
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("TRUST_REMOTE_CODE", raising=False)
    agent = hub.load_hub_agent()
    import os
    assert "TRUST_REMOTE_CODE" not in os.environ                      # set for the loader's own call only
    assert agent.is_fixture and agent.n_char_codes == 28 and agent.normalize is not None
    adapted = agent.adapt()
    env = agent.make_env()
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2835,) and adapted.kind == "sb3_actor_critic"
    with torch.no_grad():
        want = agent.model.policy.action_net(agent.model.policy.mlp_extractor(
            agent.model.policy.extract_features(agent.normalize(torch.as_tensor(obs)[None])))[0])
        assert torch.equal(adapted(obs), want)
    a, _ = agent.model.predict(agent.normalize(obs).numpy(), deterministic=True)
    assert int(adapted(obs).argmax()) == int(a)
    stats = agent.normalize.stats
    assert stats["mean"].shape == (2835,) and stats["clip_obs"] == 10.0
    d = H.collect(adapted, agent.make_env, 2, seed=0, progress=False, max_steps=1000)
    assert d.obs.shape[1] == 2835
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(CourseError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set") as e:
        hub.load_hub_agent()
    assert "\n" not in str(e.value) and 'PROFILE = "cpu"' in str(e.value)


def test_hub_switch():
    from utils.course.gpu_check import hub_opted_in

    assert hub_opted_in("gpu") and not hub_opted_in("smoke", True) and not hub_opted_in("cpu")
    assert hub_opted_in("cpu", True)


def test_paired_specificity_verdict():
    from utils.interp.controls import paired_specificity_verdict
    from utils.stats import HELD

    claim = [1.0, 1.1, 0.9]
    v, failed, diffs = paired_specificity_verdict(claim, {"nuisance: a": [0.2, 0.3, 0.1], "shuffled labels": [0, 0.1, 0],
                                                          "isotropic random (a floor)": [1.2, 1.3, 1.1]})
    assert v == HELD and failed == [] and diffs["nuisance: a"][1] > 0      # the floor is reported, not required
    v, failed, _ = paired_specificity_verdict(claim, {"nuisance: a": [1.0, 1.2, 0.8], "shuffled labels": [0, 0, 0]})
    assert v == "not separated" and failed == ["nuisance: a"]
    assert paired_specificity_verdict([1.0], {"shuffled labels": [0.1]})[0] == "one seed, untested"
    with pytest.raises(CourseError, match="specific control"):
        paired_specificity_verdict(claim, {"isotropic random (a floor)": [0, 0, 0]})
