"""Chapter 10's released models (utils.rlhf.released), offline: reduced-width fixtures in the hub's
cache layout, the GPT-2 pair through the course's converter, the GPT-NeoX reward model through
TransformerLens's converter checked against transformers' own forward pass, the chapter's reward
tools on it, and the one-line offline error."""
import pytest
import torch

from utils.core import CourseError
from utils.rlhf import analysis as A
from utils.rlhf import released as R


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hub")
    summary = R.write_released_fixtures(cache)
    assert [s["repo"] for s in summary] == [R.BASE_REPO, R.TUNED_REPO, R.RM_REPO]
    return cache


@pytest.fixture
def offline(hub, monkeypatch):
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(hub))
    return hub


def test_policy_pair_loads_and_matches_transformers(offline):
    from transformers import GPT2LMHeadModel

    base, tuned, tok = R.load_policy_pair()
    assert base.fixture and tuned.fixture and base.cfg.n_layers == 2
    ids = torch.tensor([tok("the movie was great")["input_ids"]])
    hf = GPT2LMHeadModel.from_pretrained(R._snapshot(R.BASE_REPO)).eval()
    with torch.no_grad():
        want = torch.log_softmax(hf(ids).logits, -1)
        got = torch.log_softmax(base(ids), -1)
        assert torch.allclose(got, want, atol=1e-4)
        assert not torch.allclose(tuned(ids), base(ids))       # two different checkpoints


def test_released_rm_matches_the_reward_model_forward(offline):
    from transformers import GPTNeoXConfig, GPTNeoXModel

    rm = R.load_released_rm()
    assert rm.fixture and rm.tl.cfg.positional_embedding_type == "rotary" and rm.tl.cfg.parallel_attn_mlp
    texts = [R.format_reply("review a film", "it was great"), R.format_reply("review a film", "awful, boring plot")]
    got = rm.score(texts)
    # the reference: transformers' GPT-NeoX body + out_proj at each text's last token (GPTNeoXRewardModel)
    folder = R._snapshot(R.RM_REPO)
    state = R._state_dict(folder)
    import json
    raw = json.loads((folder / "config.json").read_text())
    cfg = GPTNeoXConfig(**{k: v for k, v in raw.items() if k not in ("model_type", "architectures", "pooling")})
    body = GPTNeoXModel(cfg).eval()
    body.load_state_dict({k[len("gpt_neox."):]: v for k, v in state.items() if k.startswith("gpt_neox.")},
                         strict=False)
    ids, last = rm.tokens(texts)
    with torch.no_grad():
        h = body(ids, attention_mask=(torch.arange(ids.shape[1])[None] <= last[:, None]).long()).last_hidden_state
        want = h[torch.arange(len(ids)), last] @ state["out_proj.weight"][0] + state["out_proj.bias"][0]
    assert torch.allclose(got, want, atol=1e-4), (got, want)
    # the chapter's decomposition applies: the components sum to the reward
    stack, labels, scale = A.reward_components(rm.tl, ids, last)
    assert labels[0] == "embed" and labels[-1] == "attn biases" and len(labels) == 1 + 2 * (4 + 1) + 1
    dla = A.component_attribution(stack, scale, rm.w)
    assert torch.allclose(dla.sum(0) + rm.b, got, atol=1e-4)


def test_offline_without_the_files_is_one_line(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty"))
    for load in (R.load_policy_pair, R.load_released_rm):
        with pytest.raises(CourseError) as e:
            load()
        assert "\n" not in str(e.value) and "USE_HUB = False" in str(e.value)


def test_not_a_neox_reward_model_is_refused():
    with pytest.raises(CourseError, match="not a GPT-NeoX reward model"):
        R.neox_reward_model({"transformer.wte.weight": torch.zeros(2, 2)}, None, None)
