"""Load: many demo generations in one process (the bench's `load` part, at 2 steps instead of 40). Ten queued
workflows in a real ComfyUI: test_comfyui_e2e.test_ten_workflows_queued_at_once_all_complete."""
from alchemint_core.bench import repeated_generations


def test_fifty_demo_videos_keep_memory_flat_and_repeat_exactly():
    growth, same = repeated_generations(50, steps=2)
    print(f"\n{growth.name}: {growth.value:.1f} MB ({growth.detail})")
    assert same.detail["repeats"] == 45 and same.value == 1.0  # every repeat of a seed gave the same frames
    assert growth.met, growth  # resident memory, not time (figures in bench.json at 40 steps)
