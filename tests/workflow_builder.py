"""Builds the example workflows (ComfyUI's UI format) from short node lists, and their API (prompt) form.

`python tests/workflow_builder.py` rewrites workflows/*.json; the tests check the committed files equal what this
builds, load them in a real ComfyUI and run them.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
sys.path.insert(0, str(ROOT))

DEMO_TIMELINE = json.dumps({"version": 1, "subjects": [{"tag": "red ring", "start": 0.0, "end": 1.0},
                                                       {"tag": "yellow star", "start": 1.0, "end": 2.125}]})
WAN_TIMELINE = json.dumps({"version": 1, "subjects": [{"tag": "blue cross", "start": 0.0, "end": 2.5},
                                                      {"tag": "green triangle", "start": 2.0, "end": 5.0625}]})


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[int, int]
    widgets: list = field(default_factory=list)  # widget values in INPUT_TYPES order (seed: value, then control)
    links: dict = field(default_factory=dict)  # input name -> (source node id, output slot)
    size: tuple[int, int] = (320, 120)
    title: str | None = None


def slot_types(node_type: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(link inputs [(name, type)], outputs [(name, type)]) of a node type: ours from the pack, natives listed."""
    native = {
        "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
        "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
        "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
        "CreateVideo": ([("images", "IMAGE"), ("audio", "AUDIO")], [("VIDEO", "VIDEO")]),
        "SaveVideo": ([("video", "VIDEO")], []),
        "PreviewImage": ([("images", "IMAGE")], []),
        "VAELoader": ([], [("VAE", "VAE")]),
        "CLIPLoader": ([], [("CLIP", "CLIP")]),
        "PreviewAny": ([("source", "*")], []),
        "LoadVideo": ([], [("VIDEO", "VIDEO")]),
        "GetVideoComponents": ([("video", "VIDEO")], [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
        "UNETLoader": ([], [("MODEL", "MODEL")]),
        "KSamplerSelect": ([], [("SAMPLER", "SAMPLER")]),
        "RandomNoise": ([], [("NOISE", "NOISE")]),
        "DisableNoise": ([], [("NOISE", "NOISE")]),
        "SamplerCustomAdvanced": ([("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"),
                                   ("sigmas", "SIGMAS"), ("latent_image", "LATENT")],
                                  [("output", "LATENT"), ("denoised_output", "LATENT")]),
    }
    if node_type in native:
        return native[node_type]
    import nodes
    cls = nodes.NODE_CLASS_MAPPINGS[node_type]
    widget_types = {"INT", "FLOAT", "STRING", "BOOLEAN"}
    inputs = []
    for section in ("required", "optional"):
        for name, spec in cls.INPUT_TYPES().get(section, {}).items():
            kind = spec[0]
            if isinstance(kind, str) and kind not in widget_types:
                inputs.append((name, kind))
    return inputs, list(zip(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES), cls.RETURN_TYPES))


def widget_type(node_type: str, name: str) -> str:
    """The type of one of our nodes' widgets (a widget given a link becomes an input of that type)."""
    import nodes
    types = nodes.NODE_CLASS_MAPPINGS[node_type].INPUT_TYPES()
    spec = {**types.get("required", {}), **types.get("optional", {})}[name]
    return spec[0] if isinstance(spec[0], str) else "COMBO"


def node_inputs(n: Node) -> list[tuple[str, str, bool]]:
    """(name, type, is a linked widget) of a node's input slots: its link inputs, then its widgets given a link."""
    inputs = [(name, t, False) for name, t in slot_types(n.type)[0]]
    names = {name for name, _, _ in inputs}
    return inputs + [(name, widget_type(n.type, name), True) for name in n.links if name not in names]


def ui_workflow(nodes_: list[Node]) -> dict:
    """The UI-format workflow ComfyUI's frontend saves and loads."""
    links, out_links = [], {}
    for n in nodes_:
        names = [name for name, _, _ in node_inputs(n)]
        for name, (src, slot) in n.links.items():
            src_type = slot_types(next(m.type for m in nodes_ if m.id == src))[1][slot][1]
            link_id = len(links) + 1
            links.append([link_id, src, slot, n.id, names.index(name), src_type])
            out_links.setdefault((src, slot), []).append(link_id)
    ui_nodes = []
    link_of = {(l[3], l[4]): l[0] for l in links}
    for order, n in enumerate(nodes_):
        outputs = slot_types(n.type)[1]
        inputs = [{"name": name, "type": t, "link": link_of.get((n.id, i))} | ({"widget": {"name": name}} if widget
                                                                              else {})
                  for i, (name, t, widget) in enumerate(node_inputs(n))]
        node = {"id": n.id, "type": n.type, "pos": list(n.pos), "size": list(n.size), "flags": {}, "order": order,
                "mode": 0, "inputs": inputs,
                "outputs": [{"name": name, "type": t, "links": out_links.get((n.id, i), []), "slot_index": i}
                            for i, (name, t) in enumerate(outputs)],
                "properties": {"Node name for S&R": n.type}, "widgets_values": list(n.widgets)}
        if n.title:
            node["title"] = n.title
        ui_nodes.append(node)
    return {"last_node_id": max(n.id for n in nodes_), "last_link_id": len(links), "nodes": ui_nodes,
            "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [40, 40]}},
            "version": 0.4}


DEMO = [
    Node(1, "AlcheMinTDemoModel", (20, 40), ["shipped demo model"], size=(300, 110)),
    Node(2, "LoadImage", (20, 200), ["alchemint_red_ring.png", "image"], size=(240, 330)),
    Node(3, "LoadImage", (20, 560), ["alchemint_yellow_star.png", "image"], size=(240, 330)),
    Node(4, "AlcheMinTReferenceLoader", (300, 200), ["red ring", "transparent area (Load Image)"],
         {"image": (2, 0), "vae": (1, 1), "clip": (1, 2), "mask": (2, 1)}, size=(300, 170)),
    Node(5, "AlcheMinTReferenceLoader", (300, 560), ["yellow star", "transparent area (Load Image)"],
         {"image": (3, 0), "vae": (1, 1), "clip": (1, 2), "mask": (3, 1), "references": (4, 0)}, size=(300, 170)),
    Node(6, "AlcheMinTIntervalTimeline", (640, 560), [17, 8.0, DEMO_TIMELINE], {"references": (5, 0)},
         size=(460, 260)),
    Node(7, "CLIPTextEncode", (640, 40), ["a red ring and a yellow star"], {"clip": (1, 2)}, size=(400, 150)),
    Node(8, "CLIPTextEncode", (640, 230), [""], {"clip": (1, 2)}, size=(400, 150), title="Negative"),
    Node(9, "AlcheMinTWeRoPEConditioner", (1140, 40), ["as trained", 1.0, -0.4, 0.0],
         {"model": (1, 0), "timeline": (6, 0), "positive": (7, 0)}, size=(320, 200)),
    Node(10, "AlcheMinTMultiCFGGuider", (1140, 280), [2.0, 3.0, 0.0, False], {"negative": (8, 0)},
         size=(320, 170)),
    Node(11, "AlcheMinTSampler", (1500, 40), [64, 64, 40, 3.0, 0, "fixed"],
         {"model": (1, 0), "conditioning": (9, 0), "guider": (10, 0), "preview_vae": (1, 1)}, size=(320, 260)),
    Node(12, "VAEDecode", (1860, 40), [], {"samples": (11, 0), "vae": (1, 1)}, size=(200, 60)),
    Node(13, "CreateVideo", (1860, 140), [8.0], {"images": (12, 0)}, size=(240, 80)),
    Node(14, "SaveVideo", (2140, 40), ["video/alchemint_demo", "auto", "auto"], {"video": (13, 0)},
         size=(400, 420)),
    Node(15, "PreviewImage", (1140, 500), [], {"images": (9, 1)}, size=(640, 400), title="Attention plot"),
]

def demo_generation() -> list[Node]:
    """The demo workflow up to VAE Decode (copies, so each workflow owns its nodes)."""
    return [Node(n.id, n.type, n.pos, list(n.widgets), dict(n.links), n.size, n.title) for n in DEMO[:12]]


EVALUATE = demo_generation() + [
    Node(13, "AlcheMinTDemoSubjectMasks", (1860, 160), [], {"images": (12, 0), "timeline": (6, 0)}, size=(280, 140)),
    Node(14, "AlcheMinTEvaluateTiming", (2180, 40), [0.002, "none"], {"timeline": (6, 0), "masks_1": (13, 0),
                                                              "masks_2": (13, 1)}, size=(300, 200)),
    Node(15, "PreviewAny", (2520, 40), [], {"source": (14, 2)}, size=(420, 420), title="Timing report"),
    Node(16, "PreviewImage", (1860, 360), [], {"images": (12, 0)}, size=(600, 300), title="Generated frames"),
]

TRAIN = [
    Node(1, "AlcheMinTDemoModel", (20, 40), ["shipped demo model"], size=(300, 110)),
    Node(2, "AlcheMinTDatasetCache", (360, 40), ["alchemint_demo_dataset", "alchemint_demo_cache", 17, 0, 0, 2, 0],
         {"vae": (1, 1), "clip": (1, 2)}, size=(340, 260)),
    Node(3, "AlcheMinTTrainer", (740, 40), ["new demo-size model (from scratch)", "full", "my_demo_model", 200, 4,
                                            5e-4, 0, "werope", False, True, 0], {"cache": (2, 0)}, size=(360, 380)),
    Node(4, "PreviewImage", (1140, 40), [], {"images": (3, 1)}, size=(640, 400), title="Loss"),
    Node(5, "PreviewAny", (1140, 480), [], {"source": (3, 0)}, size=(420, 120), title="Trained file"),
]

DATASET_CAPTIONS = {1: ("a red ring and a yellow star", "red ring", "yellow star"),
                    2: ("a blue cross and a green triangle", "blue cross", "green triangle")}


def dataset_from_video(k: int, first_id: int, y: int, dataset_link: tuple[int, int] | None) -> list[Node]:
    """Load Video -> its frames and fps -> Track Subjects (demo backend) -> Dataset Writer (sample clip_k)."""
    caption, tag1, tag2 = DATASET_CAPTIONS[k]
    load, parts, track, write, preview = range(first_id, first_id + 5)
    return [
        Node(load, "LoadVideo", (20, y), [f"alchemint_demo_clip_{k}.mp4", "image"], size=(280, 330)),
        Node(parts, "GetVideoComponents", (330, y), [], {"video": (load, 0)}, size=(240, 90)),
        Node(track, "AlcheMinTTrackSubjects", (330, y + 130), [f"{tag1}\n{tag2}", "demo"],
             {"images": (parts, 0)}, size=(300, 200)),
        Node(write, "AlcheMinTDatasetWriter", (680, y),
             [8.0, caption, "alchemint_canvas_dataset", f"clip_{k}", tag1, "", tag2, "", ""],
             {"frames": (parts, 0), "fps": (parts, 2), "mask_1": (track, 0), "mask_2": (track, 1)}
             | ({"dataset": dataset_link} if dataset_link else {}), size=(360, 420)),
        Node(preview, "PreviewImage", (1080, y), [], {"images": (write, 1)}, size=(420, 300),
             title=f"Intervals of clip {k}"),
    ]


BUILD_DATASET = dataset_from_video(1, 1, 40, None) + dataset_from_video(2, 6, 520, (4, 2)) + [
    Node(11, "AlcheMinTDemoModel", (1080, 1000), ["shipped demo model"], size=(300, 110)),
    Node(12, "AlcheMinTDatasetCache", (1540, 520), ["alchemint_canvas_dataset", "alchemint_canvas_cache", 17, 0, 0,
                                                    2, 0], {"dataset": (9, 2), "vae": (11, 1), "clip": (11, 2)},
         size=(340, 260)),
    Node(13, "PreviewAny", (1920, 520), [], {"source": (12, 0)}, size=(360, 120), title="Cache"),
]

WAN = [
    Node(1, "AlcheMinTModelLoader", (20, 40), ["wan2.1_t2v_1.3B_fp16.safetensors",
                                               "alchemint_wan2.1_t2v_1.3B.safetensors", "default", False], size=(340, 150)),
    Node(2, "VAELoader", (20, 210), ["wan_2.1_vae.safetensors"], size=(340, 60)),
    Node(3, "CLIPLoader", (20, 310), ["umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan", "default"], size=(340, 110)),
    Node(4, "LoadImage", (20, 460), ["alchemint_blue_cross.png", "image"], size=(240, 330)),
    Node(5, "LoadImage", (20, 820), ["alchemint_green_triangle.png", "image"], size=(240, 330)),
    Node(6, "AlcheMinTReferenceLoader", (300, 460), ["blue cross", "transparent area (Load Image)"],
         {"image": (4, 0), "vae": (2, 0), "clip": (3, 0), "mask": (4, 1)}, size=(300, 170)),
    Node(7, "AlcheMinTReferenceLoader", (300, 820), ["green triangle", "transparent area (Load Image)"],
         {"image": (5, 0), "vae": (2, 0), "clip": (3, 0), "mask": (5, 1), "references": (6, 0)}, size=(300, 170)),
    Node(8, "AlcheMinTIntervalTimeline", (640, 820), [81, 16.0, WAN_TIMELINE], {"references": (7, 0)},
         size=(460, 260)),
    Node(9, "CLIPTextEncode", (640, 40), ["a blue cross floats over a meadow, then a green triangle spins in"],
         {"clip": (3, 0)}, size=(400, 150)),
    Node(10, "CLIPTextEncode", (640, 230), ["blurry, static, low quality"], {"clip": (3, 0)}, size=(400, 150),
         title="Negative"),
    Node(11, "AlcheMinTWeRoPEConditioner", (1140, 40), ["as trained", 1.0, -0.4, 0.0],
         {"model": (1, 0), "timeline": (8, 0), "positive": (9, 0)}, size=(320, 200)),
    Node(12, "AlcheMinTMultiCFGGuider", (1140, 280), [2.0, 5.0, 0.0, False], {"negative": (10, 0)}, size=(320, 170)),
    Node(13, "AlcheMinTSampler", (1500, 40), [832, 480, 40, 5.66, 0, "fixed"],
         {"model": (1, 0), "conditioning": (11, 0), "guider": (12, 0)}, size=(320, 260)),
    Node(14, "VAEDecode", (1860, 40), [], {"samples": (13, 0), "vae": (2, 0)}, size=(200, 60)),
    Node(15, "CreateVideo", (1860, 140), [16.0], {"images": (14, 0)}, size=(240, 80)),
    Node(16, "SaveVideo", (2140, 40), ["video/alchemint_wan", "auto", "auto"], {"video": (15, 0)}, size=(400, 420)),
    Node(17, "PreviewImage", (1140, 500), [], {"images": (11, 1)}, size=(640, 400), title="Attention plot"),
]

def native_subjects(first_id: int, vae: tuple[int, int], clip: tuple[int, int]) -> list[Node]:
    """The Wan workflows' two subjects: images, Reference Loaders (ComfyUI's VAE and text encoder), timeline."""
    i = first_id
    return [
        Node(i, "LoadImage", (20, 460), ["alchemint_blue_cross.png", "image"], size=(240, 330)),
        Node(i + 1, "LoadImage", (20, 820), ["alchemint_green_triangle.png", "image"], size=(240, 330)),
        Node(i + 2, "AlcheMinTReferenceLoader", (300, 460), ["blue cross", "transparent area (Load Image)"],
             {"image": (i, 0), "vae": vae, "clip": clip, "mask": (i, 1)}, size=(300, 170)),
        Node(i + 3, "AlcheMinTReferenceLoader", (300, 820), ["green triangle", "transparent area (Load Image)"],
             {"image": (i + 1, 0), "vae": vae, "clip": clip, "mask": (i + 1, 1), "references": (i + 2, 0)},
             size=(300, 170)),
        Node(i + 4, "AlcheMinTIntervalTimeline", (640, 820), [81, 16.0, WAN_TIMELINE], {"references": (i + 3, 0)},
             size=(460, 260)),
    ]


def native_conditioning() -> list[Node]:
    """Both native workflows' nodes 3-12: Wan's VAE and text encoder, the two subjects, the captions and Native
    Conditioning on the MODEL of node 2 (AlcheMinT Apply)."""
    return [
        Node(3, "VAELoader", (20, 290), ["wan_2.1_vae.safetensors"], size=(340, 60)),
        Node(4, "CLIPLoader", (20, 370), ["umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan", "default"],
             size=(340, 80)),
        *native_subjects(5, (3, 0), (4, 0)),
        Node(10, "CLIPTextEncode", (640, 40), ["a blue cross floats over a meadow, then a green triangle spins in"],
             {"clip": (4, 0)}, size=(400, 150)),
        Node(11, "CLIPTextEncode", (640, 230), ["blurry, static, low quality"], {"clip": (4, 0)}, size=(400, 150),
             title="Negative"),
        Node(12, "AlcheMinTNativeConditioning", (1140, 40), [832, 480, 1, "as trained", 1.0, -0.4, 0.0],
             {"model": (2, 0), "timeline": (9, 0), "positive": (10, 0), "negative": (11, 0)}, size=(340, 290)),
    ]


# Wan 2.1 on ComfyUI's own MODEL: Load Diffusion Model -> AlcheMinT Apply -> SamplerCustomAdvanced with the native
# Multi-CFG guider (a LoRA loader may sit before or after Apply).
WAN_NATIVE = [
    Node(1, "UNETLoader", (20, 40), ["wan2.1_t2v_1.3B_fp16.safetensors", "default"], size=(340, 90)),
    Node(2, "AlcheMinTApply", (20, 160), ["alchemint_wan2.1_t2v_1.3B.safetensors", "none (Wan 2.1, Wan 2.2 TI2V)"],
         {"model": (1, 0)}, size=(340, 100)),
    *native_conditioning(),
    Node(13, "AlcheMinTNativeMultiCFGGuider", (1140, 370), [2.0, 5.0, 0.0, False],
         {"model": (2, 0), "positive": (12, 0), "negative": (12, 1)}, size=(340, 190)),
    Node(14, "AlcheMinTFlowSigmas", (1140, 600), [40, 5.66], size=(340, 90)),
    Node(15, "KSamplerSelect", (1140, 720), ["euler"], size=(340, 60)),
    Node(16, "RandomNoise", (1140, 810), [0, "fixed"], size=(340, 90)),
    Node(17, "SamplerCustomAdvanced", (1520, 40), [], {"noise": (16, 0), "guider": (13, 0), "sampler": (15, 0),
                                                       "sigmas": (14, 0), "latent_image": (12, 3)}, size=(300, 330)),
    Node(18, "VAEDecode", (1860, 40), [], {"samples": (17, 0), "vae": (3, 0)}, size=(200, 60)),
    Node(19, "CreateVideo", (1860, 140), [16.0], {"images": (18, 0)}, size=(240, 80)),
    Node(20, "SaveVideo", (2140, 40), ["video/alchemint_wan_native", "auto", "auto"], {"video": (19, 0)},
         size=(400, 420)),
]

# Wan 2.2 A14B: the high-noise expert (with its adapter) samples down to the boundary, the low-noise one (with its
# own) the rest; Expert Sigmas cuts the schedule, the second sampler adds no noise and continues the first's latent.
WAN22_A14B = [
    Node(1, "UNETLoader", (20, 40), ["wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "default"], size=(340, 90),
         title="Load Diffusion Model (high noise)"),
    Node(2, "AlcheMinTApply", (20, 160), ["alchemint_wan2.2_t2v_A14B_high_noise.safetensors",
                                          "high noise (Wan 2.2 A14B)"], {"model": (1, 0)}, size=(340, 100)),
    *native_conditioning(),
    Node(21, "UNETLoader", (640, 420), ["wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", "default"],
         size=(340, 90), title="Load Diffusion Model (low noise)"),
    Node(22, "AlcheMinTApply", (640, 540), ["alchemint_wan2.2_t2v_A14B_low_noise.safetensors",
                                            "low noise (Wan 2.2 A14B)"], {"model": (21, 0)}, size=(340, 100)),
    Node(13, "AlcheMinTNativeMultiCFGGuider", (1140, 370), [2.0, 4.0, 0.0, False],
         {"model": (2, 0), "positive": (12, 0), "negative": (12, 1)}, size=(340, 190), title="Guider (high noise)"),
    Node(23, "AlcheMinTNativeMultiCFGGuider", (1140, 600), [2.0, 3.0, 0.0, False],
         {"model": (22, 0), "positive": (12, 0), "negative": (12, 1)}, size=(340, 190), title="Guider (low noise)"),
    Node(14, "AlcheMinTFlowSigmas", (1140, 830), [40, 12.0], size=(340, 90)),
    Node(24, "AlcheMinTExpertSigmas", (1140, 950), [0.875], {"sigmas": (14, 0)}, size=(340, 90)),
    Node(15, "KSamplerSelect", (1140, 1070), ["euler"], size=(340, 60)),
    Node(16, "RandomNoise", (1140, 1160), [0, "fixed"], size=(340, 90)),
    Node(25, "DisableNoise", (1520, 420), [], size=(300, 40)),
    Node(17, "SamplerCustomAdvanced", (1520, 40), [], {"noise": (16, 0), "guider": (13, 0), "sampler": (15, 0),
                                                       "sigmas": (24, 0), "latent_image": (12, 3)}, size=(300, 330),
         title="Sampler (high noise)"),
    Node(26, "SamplerCustomAdvanced", (1520, 500), [], {"noise": (25, 0), "guider": (23, 0), "sampler": (15, 0),
                                                        "sigmas": (24, 1), "latent_image": (17, 0)}, size=(300, 330),
         title="Sampler (low noise)"),
    Node(18, "VAEDecode", (1860, 40), [], {"samples": (26, 0), "vae": (3, 0)}, size=(200, 60)),
    Node(19, "CreateVideo", (1860, 140), [16.0], {"images": (18, 0)}, size=(240, 80)),
    Node(20, "SaveVideo", (2140, 40), ["video/alchemint_wan22_a14b", "auto", "auto"], {"video": (19, 0)},
         size=(400, 420)),
]

WORKFLOW_BUILDS = {"alchemint_demo_cpu": DEMO, "alchemint_wan21_1.3B_two_subjects": WAN,
                   "alchemint_wan21_1.3B_native": WAN_NATIVE, "alchemint_wan22_A14B_two_experts": WAN22_A14B,
                   "alchemint_train_demo_model": TRAIN, "alchemint_timing_evaluation": EVALUATE,
                   "alchemint_build_dataset": BUILD_DATASET}
# Files the Wan workflow names (placeholders are enough for /prompt validation in the tests).
WAN_MODEL_FILES = {"diffusion_models": ["wan2.1_t2v_1.3B_fp16.safetensors",
                                        "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
                                        "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"],
                   "alchemint": ["alchemint_wan2.1_t2v_1.3B.safetensors",
                                 "alchemint_wan2.2_t2v_A14B_high_noise.safetensors",
                                 "alchemint_wan2.2_t2v_A14B_low_noise.safetensors"], "vae": ["wan_2.1_vae.safetensors"],
                   "text_encoders": ["umt5_xxl_fp8_e4m3fn_scaled.safetensors"]}


def write_all() -> list[Path]:
    out = []
    for name, nodes_ in WORKFLOW_BUILDS.items():
        path = WORKFLOWS / f"{name}.json"
        path.write_text(json.dumps(ui_workflow(nodes_), indent=1) + "\n")
        out.append(path)
    return out


if __name__ == "__main__":
    for p in write_all():
        print(p)
