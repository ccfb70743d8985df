"""Entity tags by a local language model (curate's tagger, the paper's appendix I.1): a tiny Qwen2 with a byte-level
BPE tokenizer, built and trained here (no download), answers the real prompts of prompts.toml, and `curate` grounds
what it extracts."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config  # noqa: E402

from alchemint_core.data.curate import curate  # noqa: E402
from alchemint_core.data.curate.backends.models import model_folder  # noqa: E402
from alchemint_core.data.curate.llm_tags import LanguageModelTagger, parse_tags  # noqa: E402
from alchemint_core.data.curate.tags import prompts  # noqa: E402
from alchemint_core.data.dataset import DatasetError, list_samples, load_sample  # noqa: E402
from alchemint_core.demo.curation_check import curation_inputs  # noqa: E402
from alchemint_core.demo.data import write_demo_dataset  # noqa: E402

REAL_CONFIG = Path(__file__).parent / "data" / "model_configs" / "tagger" / "config.json"
# ChatML, the format of Qwen's chat template, reduced to what a user turn needs
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def chat(prompt: str) -> str:
    return f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


def extract_prompt(caption: str) -> str:
    return prompts()["extract"].replace("{caption}", caption)


def filter_prompt(caption: str, tags: list[str]) -> str:
    return prompts()["filter"].replace("{caption}", caption).replace("{tags}", json.dumps(tags))


def tiny_tokenizer(texts: list[str], chat_template: str | None = CHAT_TEMPLATE) -> PreTrainedTokenizerFast:
    """A byte-level BPE learned from `texts` (whole words become tokens, so prompts stay short)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=2000, special_tokens=SPECIAL, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = chat_template
    return tokenizer


def train_tagger(folder: Path, lessons: list[tuple[str, str]]) -> None:
    """A tiny random Qwen2 trained until greedy decoding answers each (prompt, answer) lesson exactly, saved with
    its tokenizer into `folder` as a checkpoint is laid out."""
    tokenizer = tiny_tokenizer([p + a for p, a in lessons])
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    model = AutoModelForCausalLM.from_config(config)
    rows = [(tokenizer(chat(p))["input_ids"], tokenizer(a + "<|im_end|>")["input_ids"]) for p, a in lessons]
    length = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_token_id)
    labels, mask = torch.full_like(ids, -100), torch.zeros_like(ids)
    for k, (p, a) in enumerate(rows):
        ids[k, :len(p) + len(a)] = torch.tensor(p + a)
        labels[k, len(p):len(p) + len(a)] = torch.tensor(a)  # the loss is on the answers only
        mask[k, :len(p) + len(a)] = 1
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared machine: one thread is several times faster
    try:
        for _ in range(400):
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
            # every answer token the argmax after its prefix: greedy decoding then reproduces the answers
            if ((out.logits[:, :-1].argmax(-1) == labels[:, 1:]) | (labels[:, 1:] == -100)).all():
                break
            optimiser.zero_grad()
            out.loss.backward()
            optimiser.step()
        else:
            pytest.fail("the tiny tagger did not learn its answers in 400 steps")
    finally:
        torch.set_num_threads(threads)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One demo video whose captions file gives no tags, its caption extended with a body part, and a tagger folder
    whose model has learned to answer this caption: the extract prompt with a good tag and the body part, the filter
    prompt (given those two) with the good tag alone."""
    root = tmp_path_factory.mktemp("tagger")
    write_demo_dataset(root / "truth", 1, seed=3)
    curation_inputs(root / "truth", root / "videos", root / "captions.json")
    captions = json.loads((root / "captions.json").read_text())
    (name, entry), = captions.items()
    assert "tags" not in entry  # the tags must come from the language model
    truth = load_sample(list_samples(root / "truth")[0])
    good = truth.entities[0].tag
    entry["caption"] += " held in a hand"
    (root / "captions.json").write_text(json.dumps(captions))
    caption, first = entry["caption"], [good, "hand"]
    train_tagger(root / "models" / "tagger", [(extract_prompt(caption), json.dumps(first)),
                                              (filter_prompt(caption, first), json.dumps([good]))])
    return {"root": root, "caption": caption, "good": good, "first": first, "truth": truth, "name": name}


def test_the_chat_formatted_prompts_of_prompts_toml_reach_the_model(demo):
    tagger = LanguageModelTagger.from_folder(demo["root"] / "models", device="cpu")
    calls, generate = [], tagger.model.generate

    def recording(**inputs):  # the real generate, its input and output ids kept
        out = generate(**inputs)
        calls.append((inputs["input_ids"][0], out[0]))
        return out
    tagger.model.generate = recording
    assert tagger(demo["caption"]) == [demo["good"]]
    assert len(calls) == 2
    (first_in, first_out), (second_in, second_out) = calls
    decode = tagger.tokenizer.decode
    assert decode(first_in) == chat(extract_prompt(demo["caption"]))
    assert json.loads(decode(first_out[len(first_in):], skip_special_tokens=True)) == demo["first"]
    # the second pass is given the first pass's tags, and its answer is what the tagger returns
    assert decode(second_in) == chat(filter_prompt(demo["caption"], demo["first"]))
    assert json.loads(decode(second_out[len(second_in):], skip_special_tokens=True)) == [demo["good"]]
    assert first_out[-1] == second_out[-1] == tagger.tokenizer.convert_tokens_to_ids("<|im_end|>")  # it stopped
    # an unknown caption gets whatever the untrained answer parses to, never an error; a caption holding a
    # placeholder or a control token stays text inside the user's turn
    calls.clear()
    odd = "a {tags} of <|im_end|> a red ring"
    assert isinstance(tagger(odd), list)
    assert decode(calls[0][0]) == chat(extract_prompt(odd))
    assert (calls[0][0] == tagger.tokenizer.convert_tokens_to_ids("<|im_end|>")).sum() == 1
    # float32 on CPU by default; the dtype a GPU run asks for is the one loaded
    assert tagger.model.dtype == torch.float32 and tagger.model.device.type == "cpu"
    half = LanguageModelTagger.from_folder(demo["root"] / "models", device="cpu", dtype=torch.bfloat16)
    assert half.model.dtype == torch.bfloat16 and isinstance(half(demo["caption"]), list)


ANSWERS = {  # a model's answer -> the tags parsed from it
    "clean": ('["red disc", "blue ring"]', ["red disc", "blue ring"]),
    "text around": ('Sure! The entities are:\n```json\n["man in red", "red  ball"]\n```\nDone.',
                    ["man in red", "red ball"]),
    "escaped quotes": ('["the \\"tall\\" man", "it\'s lid"]', ['the "tall" man', "it's lid"]),
    "python quotes": ("['the man in red', 'the \"big\" dog', 'it\\'s lid']",
                      ["the man in red", 'the "big" dog', "it's lid"]),
    "brackets before": ('Entities [from the caption]: ["a cat"]', ["a cat"]),
    "first list wins": ('["a cat"] or maybe ["a dog"]', ["a cat"]),
    "non-strings": ('[1, null, ["nested"], {"a": 2}, "", "  dog  "]', ["dog"]),
    "no list": ("I cannot find any entity.", []),
    "a dict": ('{"tags": "a cat"}', []),
    "unterminated": ('["unterminated', []),
    "deep": ("[" * 5000, []),
    "empty": ("", []),
}


@pytest.mark.parametrize("answer,tags", ANSWERS.values(), ids=ANSWERS.keys())
def test_answers_parse_to_the_strings_of_their_first_list(answer, tags):
    assert parse_tags(answer) == tags


def test_curate_extracts_tags_with_the_language_model_and_grounds_them(demo, tmp_path):
    root = demo["root"]
    report = curate(root / "videos", tmp_path / "out", root / "captions.json", backend="demo", models=root / "models")
    assert report.written == [demo["name"]] and not report.failed
    # the second pass removed the body part before the rules had to: nothing was dropped or missed
    assert report.not_found == {}
    sample = load_sample(tmp_path / "out" / demo["name"])
    assert sample.caption == demo["caption"] and [e.tag for e in sample.entities] == [demo["good"]]
    truth = next(e.masks for e in demo["truth"].entities if e.tag == demo["good"])
    got = sample.entities[0].masks
    present = np.flatnonzero(truth.any(axis=(1, 2)))
    iou = np.mean([(truth[f] & got[f]).sum() / (truth[f] | got[f]).sum() for f in present])
    assert iou > 0.9  # the demo backend grounded the language model's tag in the right place
    # without the language model, the demo's vocabulary tags every colour and shape of the caption
    plain = curate(root / "videos", tmp_path / "plain", root / "captions.json", backend="demo")
    assert len(load_sample(tmp_path / "plain" / demo["name"]).entities) == len(demo["truth"].entities)


def test_the_real_qwen_config_is_accepted_and_builds_without_weights(tmp_path):
    folder = tmp_path / "models" / "tagger"
    folder.mkdir(parents=True)
    shutil.copy(REAL_CONFIG, folder / "config.json")
    assert model_folder(tmp_path / "models", "tagger") == folder
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.lm_head.weight.shape == (152064, 3584)
    assert 7.6e9 < sum(p.numel() for p in model.parameters()) < 7.7e9  # the model card's 7.61B
    # a folder holding the config alone (the tokenizer files forgotten) is explained before any weight loads
    with pytest.raises(DatasetError, match=r"no tokenizer in .*tagger.*Qwen/Qwen2.5-7B-Instruct") as err:
        LanguageModelTagger.from_folder(tmp_path / "models")
    assert "\n" not in str(err.value)


def test_a_tokenizer_without_chat_template_is_explained(tmp_path):
    folder = tmp_path / "models" / "tagger"
    tiny_tokenizer(["a red disc"], chat_template=None).save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(DatasetError, match=r"tagger has no chat template.*instruction-tuned") as err:
        LanguageModelTagger.from_folder(tmp_path / "models")
    assert "\n" not in str(err.value)


def test_a_missing_tagger_is_named_when_a_caption_needs_tags(demo, tmp_path):
    """sam3 (a tiny random checkpoint) without a tagger folder: the run starts, since a captions file that gives
    every tag needs no language model, and the video whose caption needs tags fails with the line naming the
    folder and the checkpoint."""
    from test_curate_sam3 import write_checkpoint
    models = write_checkpoint(tmp_path / "models", seed=0)
    report = curate(demo["root"] / "videos", tmp_path / "out", demo["root"] / "captions.json", backend="sam3",
                    models=models)
    assert not report.written and list(report.failed) == [demo["name"]]
    why = report.failed[demo["name"]]
    assert f"{models / 'tagger'}/config.json" in why and "Qwen/Qwen2.5-7B-Instruct" in why and "\n" not in why
