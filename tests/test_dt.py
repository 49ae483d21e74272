"""Decision transformers (chapter 07): environments, returns-to-go, the model, training,
rollouts, circuit helpers, and one-line errors for bad input."""
import pytest
import torch

from utils.core import CourseError
from utils.dt import tasks
from utils.dt.data import make_tokens, returns_to_go, rollout, shuffle_rtg, swap_rtg
from utils.dt.evaluate import dt_rollout
from utils.dt.interp import (ablate_heads, ablation_hooks, all_heads, head_patching, key_masks, mean_z,
                             patch_heads)
from utils.dt.train import DTTrainConfig, dt_loss, train_dt
from utils.envs.graph_walk import GraphWalk, bfs_distances, random_graph, random_walk_policy
from utils.envs.memory_corridor import FORWARD, LEFT, RIGHT, MemoryCorridor
from utils.models.decision_transformer import DecisionTransformer, DTConfig, interleave


def test_graph_env_returns_minus_length_and_bfs_is_shortest():
    adj = random_graph(10, 0.12, seed=0)
    assert torch.equal(adj, adj.T) and not adj.diagonal().any()
    dist = bfs_distances(adj, 0)
    assert (dist >= 0).all() and dist[0] == 0
    env = GraphWalk(50, adj, goal=0, max_steps=10, seed=0)
    traj = rollout(env, random_walk_policy(adj, torch.Generator().manual_seed(0)), seed=0)
    length = traj["mask"].sum(1)
    assert torch.equal(traj["rewards"].sum(1), -length.float())
    assert (length[traj["success"]] >= dist[traj["states"][traj["success"], 0]]).all()


def test_memory_corridor_rewards_the_cued_arm_only_at_the_junction():
    env = MemoryCorridor(2, length=3, max_steps=6, seed=0)
    obs = env.reset(cues=torch.tensor([0, 1]))
    assert obs.tolist() == [0, 1]
    obs, r, term, *_ = env.step(torch.tensor([LEFT, RIGHT]))  # no-ops in the corridor
    assert r.tolist() == [0, 0] and not term.any()
    for _ in range(2):
        obs, *_ = env.step(torch.tensor([FORWARD, FORWARD]))
    assert obs.tolist() == [env.junction_state] * 2
    _, r, term, _, info = env.step(torch.tensor([LEFT, LEFT]))
    assert r.tolist() == [1.0, -1.0] and term.all() and info["success"].tolist() == [True, False]


def test_returns_to_go_and_tokens():
    rewards = torch.tensor([[-1.0, -1.0, -1.0], [2.0, 5.0, 7.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    rtg = returns_to_go(rewards, mask)
    assert rtg.tolist() == [[-3, -2, -1], [2, 0, 0]]
    tok = make_tokens(rtg, torch.zeros(2, 3), torch.ones(2, 3), mask, none_action=9)
    assert tok[1, 1:, 2].tolist() == [9, 9]
    with pytest.raises(CourseError, match="share one shape"):
        make_tokens(rtg, torch.zeros(2, 4), torch.ones(2, 3), mask, 9)  # mismatched lengths


def test_swap_and_shuffle_keep_the_trajectory():
    mask = torch.tensor([[True, True, False]] * 4)
    tok = make_tokens(returns_to_go(-torch.ones(4, 3), mask), torch.zeros(4, 3), torch.zeros(4, 3), mask, 3)
    sw = swap_rtg(tok, mask, 5)
    assert sw[:, 0, 0].tolist() == [5] * 4 and (sw[:, 1, 0] - sw[:, 0, 0] == 1).all()
    sh = shuffle_rtg(tok, mask, seed=0)
    assert sorted(sh[..., 0][mask].tolist()) == sorted(tok[..., 0][mask].tolist())


def test_model_hooks_and_interleave_match():
    model = DecisionTransformer(DTConfig(n_states=5, n_actions=3, context_len=4, n_layers=2, d_model=16))
    tok = torch.tensor([[[1, 0, 2], [1, 2, 2], [1, 3, 0]]])
    _, cache = model.run_with_cache(tok)
    assert torch.allclose(interleave(cache["hook_rtg_embed"], cache["hook_state_embed"],
                                     cache["hook_action_embed"]), cache["hook_embed"])
    assert model.action_logits(tok).shape == (1, 3, 3)
    # the action at step t is predicted from the state position: changing a_t cannot change it
    alt = tok.clone()
    alt[0, -1, 2] = 1
    assert torch.allclose(model.action_logits(tok), model.action_logits(alt))


def test_rtg_embedding_is_a_line():
    """Adding delta * rtg_direction at hook_rtg_embed is the same as asking for R + delta."""
    model = DecisionTransformer(DTConfig(n_states=5, n_actions=3, context_len=4, rtg_scale=0.5))
    tok = torch.tensor([[[1, 0, 2], [1, 2, 2]]])
    more = tok.clone()
    more[..., 0] += 3
    hook = ("hook_rtg_embed", lambda x, hook: x + 3 * model.rtg_direction)
    assert torch.allclose(model.run_with_hooks(tok, fwd_hooks=[hook]), model(more), atol=1e-5)


def test_bc_model_ignores_the_request():
    model = DecisionTransformer(DTConfig(n_states=5, n_actions=3, context_len=4, use_rtg=False))
    tok = torch.tensor([[[1, 0, 2], [1, 2, 2]]])
    assert torch.allclose(model(tok), model(swap_rtg(tok, torch.ones(1, 2, dtype=torch.bool), -7)))


def test_bad_input_one_line_errors():
    model = DecisionTransformer(DTConfig(n_states=5, n_actions=3, context_len=4))
    with pytest.raises(CourseError, match="longer than the model's context_len"):
        model(torch.zeros(1, 5, 3, dtype=torch.long))
    with pytest.raises(CourseError, match=r"shape \[batch, steps, 3\]"):
        model(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(CourseError, match="state values"):
        model(torch.tensor([[[0, 9, 0]]]))
    with pytest.raises(CourseError, match="unknown task"):
        tasks.make_model("atari", 0)
    with pytest.raises(CourseError, match="rewards and mask"):
        returns_to_go(torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(CourseError, match="divisible"):
        DTConfig(d_model=10, n_heads=3).validate()
    with pytest.raises(CourseError, match="do not fit"):
        dt_rollout(model, MemoryCorridor(2, length=4, max_steps=8), 1.0)


def test_training_learns_the_memory_task_quickly():
    data = tasks.memory_data(600, seed=0)
    model = tasks.make_model("memory", seed=0)
    losses = train_dt(model, data["tokens"], data["mask"], DTTrainConfig(steps=60, batch_size=32), desc="test")
    assert sum(losses[-10:]) < sum(losses[:10])
    with torch.no_grad():
        final = float(dt_loss(model.action_logits(data["tokens"]), data["tokens"][..., 2], data["mask"]))
    assert final < losses[0]


def test_patching_and_ablation_helpers():
    model = tasks.make_model("memory", seed=0).eval()
    jc = tasks.junction_contexts(8, seed=0, rtg=1)
    assert jc["at_junction"].all()
    bad = swap_rtg(jc["tokens"], torch.ones(8, jc["tokens"].shape[1], dtype=torch.bool), -1)

    def metric(lg):
        return (lg[:, -2, 0] - lg[:, -2, 1]).mean()
    single = head_patching(model, jc["tokens"], bad, metric)
    assert single.shape == (2, model.cfg.n_heads)
    everything = patch_heads(model, jc["tokens"], bad, all_heads(model), metric)
    assert abs(everything - 1.0) < 1e-4  # every head patched: the request only enters through attention
    means = mean_z(model, jc["tokens"])
    d_head = model.cfg.d_head
    z = torch.randn(2, 6, model.cfg.n_heads, d_head)
    out = ablate_heads([(0, 1)], 0, means[0])(z.clone())
    assert torch.equal(out[:, :, 0], z[:, :, 0])
    assert torch.allclose(out[:, :, 1], means[0][:6, 1].expand(2, 6, d_head))
    assert [n for n, _ in ablation_hooks([(1, 0)], means)] == ["blocks.1.attn.hook_z"]
    km = key_masks(torch.ones(2, 3, dtype=torch.bool))
    assert km["rtg"][0, 1, 0] and km["cue"][0, 4, 1] and not km["rtg"][0, 0].any()


# --- task 2 in MiniGrid ------------------------------------------------------------------
def test_minigrid_views_flip_is_an_involution_and_marks_the_object():
    from utils.envs.minigrid_memory import VIEWS, MiniGridMemory
    assert torch.equal(VIEWS.flip_cue[VIEWS.flip_cue], torch.arange(VIEWS.n))
    assert torch.equal(VIEWS.shows_cue, VIEWS.flip_cue != torch.arange(VIEWS.n))
    env = MiniGridMemory(6, seed=0)
    obs = env.reset(seed=0)
    assert VIEWS.shows_cue[obs].all()  # every start faces the object
    flipped = env.reset(seed=0, cues=1 - env.cue)
    assert torch.equal(flipped, VIEWS.flip_cue[obs])  # same layout, other object: the flipped views


def test_minigrid_split_contexts_reward_only_the_matching_arm():
    from utils.dt import minigrid as mg
    from utils.envs.minigrid_memory import FORWARD, MiniGridMemory
    sc = mg.split_contexts(6, seed=3, rtg=4)
    assert sc["tokens"].shape == (6, 9, 3) and (sc["tokens"][:, -1, 2] == 3).all()
    assert sc["shows_cue"][:, 0].all() and not sc["shows_cue"][:, -1].any()
    assert torch.equal(mg.flip_cue(mg.flip_cue(sc["tokens"])), sc["tokens"])
    for right_arm in (True, False):  # replay the scripted walks, then turn and step forward
        env = MiniGridMemory(6, seed=3)
        env.reset(seed=3)
        for e in env.envs:
            e.agent_pos[0], e.agent_dir = 1, 2
        for k in range(8):
            env.step(sc["tokens"][:, k, 2])
        turn = sc["turn"] if right_arm else 1 - sc["turn"]
        env.step(turn)
        _, r, term, _, info = env.step(torch.full((6,), FORWARD))
        assert term.all() and info["success"].all() == right_arm and ((r > 0) == right_arm).all()


def test_minigrid_bad_input_one_line_errors():
    from utils.dt import minigrid as mg
    from utils.envs.minigrid_memory import MiniGridMemory
    env = MiniGridMemory(2, seed=0)
    with pytest.raises(CourseError, match="cues must be"):
        env.reset(cues=torch.tensor([0, 2]))
    env.reset(seed=0)
    with pytest.raises(CourseError, match="actions must be"):
        env.step(torch.tensor([0, 5]))
    with pytest.raises(CourseError, match="max_steps"):
        MiniGridMemory(2, max_steps=3)
    with pytest.raises(CourseError, match="mix must"):
        mg.minigrid_data(4, 0, expert=None, mix={"expert": 0.5, "random": 0.5})
    assert tasks.make_model("minigrid", 0).dt_cfg.n_states == mg.VIEWS.n


def test_minigrid_ppo_env_and_expert_data():
    """The privileged Gymnasium id goes through make_env; the shipped expert's episodes succeed
    far more often than the random policy's, so the data's returns vary."""
    from utils.dt import minigrid as mg
    from utils.envs import make_env
    from utils.envs.minigrid_memory import GYM_ID, VIEWS
    env = make_env(GYM_ID, 2, seed=0)
    assert env.obs_dim == VIEWS.n + 2 and env.n_actions == 3
    env.close()
    data = mg.minigrid_data(90, seed=0, expert=mg.load_expert())
    ret = data["tokens"][:, 0, 0]
    expert_ok = (ret[data["kind"] == 0] > 0).float().mean()
    random_ok = (ret[data["kind"] == 2] > 0).float().mean()
    assert expert_ok > 0.9 and random_ok < 0.5 and len(ret.unique()) >= 3
    assert torch.equal(ret, data["rewards"].sum(1).long())


def test_hf_adapter_matches_sizes_and_learns():
    from utils.dt import hf as dt_hf
    ref = tasks.make_model("memory", seed=0)
    hf = dt_hf.hf_model(ref, seed=0)
    tok = torch.tensor([[[1, 0, 2], [1, 2, 3]]])
    inp = dt_hf.hf_inputs(hf, tok)
    assert inp["actions"][0, 1].abs().sum() == 0 and inp["states"].shape == (1, 2, ref.dt_cfg.n_states)
    assert dt_hf.hf_logits(hf, tok).shape == (1, 2, 3)
    n_hf, n_ours = sum(p.numel() for p in hf.parameters()), ref.n_params()
    assert 0.5 < n_hf / n_ours < 2.0  # the same size up to the embeddings' details
    data = tasks.memory_data(300, seed=0)
    losses = dt_hf.train_hf(hf, data["tokens"], data["mask"], DTTrainConfig(steps=40, batch_size=32), desc="test")
    assert sum(losses[-5:]) < sum(losses[:5])
    assert dt_hf.hf_act(hf)(data["tokens"][:4, :3]).shape == (4,)


def test_bench_script_builds_both_tasks_and_rejects_unknown_ones():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_dt.py"
    spec = importlib.util.spec_from_file_location("bench_dt", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with pytest.raises(CourseError, match="unknown task"):
        bench.setup("atari", 10, 0)
    data, make, curve, requests = bench.setup("memory", 40, 0)
    model = make()
    assert requests == (1, -1) and len(curve(model)) == 2
    from utils.dt import hf as dt_hf
    assert len(curve(act_fn=dt_hf.hf_act(dt_hf.hf_model(model, 0)))) == 2


def test_released_hopper_dt_loads_offline_from_the_fixture(tmp_path, monkeypatch):
    """The released-DT path (utils.dt.hopper) on a random-weight fixture at full shape in the hub's
    cache layout: one-line error before the fixture exists, then load, roll out in Hopper-v5 with the
    model card's normalisation, and read the attention to the return tokens."""
    pytest.importorskip("transformers")
    from huggingface_hub import constants

    from utils.dt import hopper
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(CourseError, match="offline fixture") as err:
        hopper.load_released_dt()
    assert "\n" not in str(err.value)
    summary = hopper.write_hopper_fixture(tmp_path / "hub")
    assert summary["files"] == ["config.json", "pytorch_model.bin"]
    dt = hopper.load_released_dt()
    assert dt.is_fixture and dt.config.hidden_size == 128 and dt.config.n_layer == 3
    states, actions = torch.randn(2, 25, 11), torch.zeros(2, 25, 3)
    rtg, steps = torch.full((2, 25), 3600.0), torch.arange(25).expand(2, 25)
    inputs = hopper.dt_inputs(dt, states, actions, rtg, steps)
    assert inputs["states"].shape == (2, hopper.CONTEXT, 11)
    assert torch.allclose(inputs["returns_to_go"], torch.full((2, hopper.CONTEXT, 1), 3.6))
    att = hopper.attention_to_return(dt, states, actions, rtg, steps)
    assert att.shape == (3, 1) and ((att > 0) & (att < 1)).all()
    pytest.importorskip("mujoco")
    out = hopper.rollout(dt, 3600.0, n_episodes=2, max_steps=5)
    assert out["return"].shape == (2,) and (out["length"] >= 1).all()


def test_fast_training_path_is_the_hooked_forward():
    """train_dt's fused path (fast_logits: F.layer_norm, scaled_dot_product_attention, no hooks)
    computes the same logits as the hooked TransformerLens forward, on both task sizes."""
    for task in ("memory", "graph"):
        model = tasks.make_model(task, seed=3)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            for p in model.parameters():
                p.data.add_(0.2 * torch.randn_like(p))
        tok = tasks.graph_data(6, 0)["tokens"] if task == "graph" else torch.tensor([[[1, 0, 2], [1, 2, 3]]] * 2)
        assert torch.allclose(model(tok), model.fast_logits(tok), atol=1e-4)
        assert torch.allclose(model.action_logits(tok), model.fast_action_logits(tok), atol=1e-4)
