"""ComfyUI nodes (classic API). Thin: parse inputs, call alchemint_core, format outputs."""
from pathlib import Path

from . import bridge
from .curation import TrackSubjects
from .evaluation import DemoSubjectMasks, EvaluateTiming
from .models import DemoModel, ModelLoader
from .native import AlcheMinTApply, ExpertSigmas, FlowSigmas, NativeConditioning, NativeMultiCFGGuider
from .references import ReferenceLoader
from .sampling import MultiCFGGuider, Sampler, WeRoPEConditioner
from .timed_captions import TimedCaptions
from .timeline import IntervalTimeline
from .training import AdapterTrainer, DatasetCache, DatasetWriter

bridge.register_model_folder()
bridge.install_example_inputs(Path(__file__).resolve().parent.parent / "workflows" / "inputs")

NODES = {
    "AlcheMinTModelLoader": (ModelLoader, "AlcheMinT Model Loader"),
    "AlcheMinTDemoModel": (DemoModel, "AlcheMinT Demo Model"),
    "AlcheMinTReferenceLoader": (ReferenceLoader, "AlcheMinT Reference Loader"),
    "AlcheMinTIntervalTimeline": (IntervalTimeline, "AlcheMinT Interval Timeline"),
    "AlcheMinTTimedCaptions": (TimedCaptions, "AlcheMinT Timed Captions"),
    "AlcheMinTWeRoPEConditioner": (WeRoPEConditioner, "AlcheMinT WeRoPE Conditioner"),
    "AlcheMinTMultiCFGGuider": (MultiCFGGuider, "AlcheMinT Multi-CFG Guider"),
    "AlcheMinTSampler": (Sampler, "AlcheMinT Sampler"),
    "AlcheMinTApply": (AlcheMinTApply, "AlcheMinT Apply"),
    "AlcheMinTNativeConditioning": (NativeConditioning, "AlcheMinT Native Conditioning"),
    "AlcheMinTNativeMultiCFGGuider": (NativeMultiCFGGuider, "AlcheMinT Multi-CFG Guider (native)"),
    "AlcheMinTFlowSigmas": (FlowSigmas, "AlcheMinT Flow Sigmas"),
    "AlcheMinTExpertSigmas": (ExpertSigmas, "AlcheMinT Expert Sigmas"),
    "AlcheMinTDatasetCache": (DatasetCache, "AlcheMinT Dataset Cache"),
    "AlcheMinTTrackSubjects": (TrackSubjects, "AlcheMinT Track Subjects"),
    "AlcheMinTDatasetWriter": (DatasetWriter, "AlcheMinT Dataset Writer"),
    "AlcheMinTTrainer": (AdapterTrainer, "AlcheMinT Trainer"),
    "AlcheMinTEvaluateTiming": (EvaluateTiming, "AlcheMinT Evaluate Timing"),
    "AlcheMinTDemoSubjectMasks": (DemoSubjectMasks, "AlcheMinT Demo Subject Masks"),
}
NODE_CLASS_MAPPINGS = {k: cls for k, (cls, _) in NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {k: name for k, (_, name) in NODES.items()}
