"""Tiny random-weight models of the public checkpoints' classes (Grounding DINO, CLIP, SAM 2 video), saved in the
transformers format with locally built tokenizers, for the curation and scoring tests: nothing is downloaded."""
import json
from pathlib import Path

import torch

from alchemint_core.synthetic import COLOURS, SHAPES

WORDS = sorted(set(COLOURS) | set(SHAPES) | {"a", "the"})


def bert_vocab() -> dict[str, int]:
    """A WordPiece vocabulary in BERT's layout: Grounding DINO's model hard-codes [CLS]=101, [SEP]=102, '.'=1012 and
    '?'=1029 as the phrase delimiters."""
    tokens = [f"[unused{i}]" for i in range(1030)]
    for i, token in {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".", 1029: "?"}.items():
        tokens[i] = token
    return {t: i for i, t in enumerate(tokens + WORDS)}


def clip_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-pair vocabulary that spells every demo word from its letters, and the merges that build them."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in sorted(set("".join(WORDS)) | {"."}):
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    merges = []
    for word in WORDS:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            if (parts[0], parts[1]) not in merges:
                merges.append((parts[0], parts[1]))
            parts = [parts[0] + parts[1]] + parts[2:]
            vocab.setdefault(parts[0], len(vocab))
    return vocab, merges


def save_grounding_dino(folder: Path) -> None:
    from transformers import BertConfig, BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection
    from transformers import GroundingDinoImageProcessorPil, GroundingDinoProcessor, SwinConfig
    vocab = bert_vocab()
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1] * 4,
                                   window_size=2, out_features=["stage2", "stage3", "stage4"]),
        text_config=BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64),
        # d_model 64: its GroupNorm(32) needs two channels a group on the 1x1 top level; two decoder layers: the
        # shared box heads tie layer 0 to the others
        d_model=64, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=8, encoder_n_points=2, decoder_n_points=2,
        max_text_len=32)
    GroundingDinoForObjectDetection(config).save_pretrained(folder)
    GroundingDinoProcessor(GroundingDinoImageProcessorPil(size={"shortest_edge": 32, "longest_edge": 48}),
                           BertTokenizer(vocab=vocab)).save_pretrained(folder)


def save_clip(folder: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer
    vocab, merges = clip_bpe()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),  # the text is pooled at eos_token_id
        vision_config=dict(image_size=16, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2),
        projection_dim=8)
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(CLIPImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
                  CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)).save_pretrained(folder)


SAM2_MEAN, SAM2_STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)  # not the defaults: the backend must read them


def save_sam2(folder: Path) -> None:
    from transformers import Sam2VideoConfig, Sam2VideoModel
    size = 32  # 8x8 features at stride 4, pooled to 4x4 and 2x2
    backbone = dict(model_type="sam2_hiera_det_model", hidden_size=8, image_size=[size, size],
                    embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1] * 4,
                    blocks_per_stage=[1, 1, 2, 1], window_size_per_stage=[4, 2, 2, 1], global_attention_blocks=[3],
                    window_positional_embedding_background_size=[2, 2])
    # hidden 128 over a 64-channel memory: the memory cross-attention takes 64 channels, and object pointers are split
    # into memory-sized pieces only when the hidden size is larger
    config = Sam2VideoConfig(
        vision_config=dict(model_type="sam2_vision_model", backbone_config=backbone, fpn_hidden_size=128,
                           backbone_channel_list=[64, 32, 16, 8], backbone_feature_sizes=[[8, 8], [4, 4], [2, 2]]),
        prompt_encoder_config=dict(hidden_size=128, image_size=size, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=128, mlp_dim=32, num_hidden_layers=1, num_attention_heads=2,
                                 iou_head_hidden_dim=16),
        image_size=size, num_maskmem=3, memory_attention_hidden_size=128, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=32, memory_attention_rope_feat_sizes=[2, 2],
        memory_encoder_hidden_size=128, memory_encoder_output_channels=64, mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=32)
    model = Sam2VideoModel(config)
    with torch.no_grad():  # random weights that always see the object, so tracks have masks to follow and write
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(10.0)
    model.save_pretrained(folder)
    # the processor file of a SAM 2 checkpoint, written out: its processor classes need torchvision to be built
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Sam2ImageProcessor", "processor_class": "Sam2VideoProcessor",
        "size": {"height": size, "width": size}, "image_mean": SAM2_MEAN, "image_std": SAM2_STD,
        "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True}))
