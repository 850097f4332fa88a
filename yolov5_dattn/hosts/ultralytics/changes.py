"""Every change this plugin makes to ultralytics at run time, in the order it is made (`core.steps.Step` rows).

`install()` (run by `import yolov5_dattn.hosts.ultralytics`) applies the plugin steps; `use_policy()` (our commands, or
a library user's one opt-in call) applies the policy steps after them. `line` is where the change bites in
ultralytics 8.4.190 (file under site-packages/ultralytics).
"""
from typing import List

from yolov5_dattn.core.steps import Step

__all__ = ["STEPS"]

STEPS: List[Step] = [
    Step("registry", "plugin", "nn.tasks.parse_model (base_modules, repeat_modules, C3k2's c3k, AIFI), "
         "yaml_model_load's scale", "nn/tasks.py:2069, 2285",
         "parse_model builds our blocks like their parents (`registry.REGISTRY`); a YAML whose name carries the "
         "scale builds from any folder (`scale_from_name`)"),
    Step("flops", "plugin", "utils.torch_utils.get_flops", "utils/torch_utils.py:632",
         "the model summary counts GFLOPs with the attention, never 0.0 from the thop clash"),
    Step("transfer report", "plugin", "nn.tasks.BaseModel.load", "nn/tasks.py:327",
         "a load of stock weights into a DAttention model says what was transferred and what starts fresh"),
    Step("fmap checks", "plugin", "engine.model.Model.train / val / predict / export",
         "engine/model.py:807, 613, 491, 753",
         "each DAttention is checked against the feature maps of the run's imgsz before any run folder exists "
         "(fixed_pe, maps too small); models without DAttention pass through unchanged"),
    Step("ddp workers", "plugin", "utils.dist.generate_ddp_file", "utils/dist.py:51",
         "multi-GPU workers rebuild the trainer with our blocks (a YAML's name alone would not import them), and "
         "with the launching process's policy"),
    Step("edge exports", "plugin", "utils.export.ncnn.torch2ncnn, utils.export.mnn.onnx2mnn, "
         "engine.exporter.Exporter.export_coreml",
         "utils/export/ncnn.py:12, utils/export/mnn.py:11, engine/exporter.py:1384",
         "NCNN has no layer for baddbmm, expand_as or the gather sampler's index arithmetic: the pnnx trace runs "
         "with MatMul / broadcasting forms and grid_sample, which pnnx maps to NCNN's GridSample; MNN's converter "
         "is imported without its logger (which would pip install and upload usage logs); CoreML converts the "
         "torch.export program (coremltools' TorchScript frontend converts no YOLO model under NumPy 2.4)"),
    Step("offline", "policy", "utils.ONLINE, checks.check_font / check_requirements / check_amp, OpenVINO "
         "telemetry", "utils/__init__.py:1013, utils/checks.py:436, 527, 987",
         "no network: no font or weight download, no pip install; the AMP check compares the model being trained "
         "with itself instead of downloading yolo26n.pt (`amp_check`)"),
    Step("safe loading", "policy", "utils.patches.torch_load, nn.tasks.torch_safe_load, data.utils.check_det_dataset",
         "utils/patches.py:197, nn/tasks.py:1873, data/utils.py:717",
         "every checkpoint loads weights-only with an allowlist in the loading thread's scope; full pickle only "
         "with --trust-checkpoint; a data YAML's download: line never runs"),
    Step("resume beside the checkpoint", "policy", "engine.trainer.BaseTrainer.check_resume",
         "engine/trainer.py:1024",
         "a resumed run writes only into the run folder that holds its checkpoint, whatever the checkpoint says"),
    Step("atomic saves", "policy", "engine.trainer.BaseTrainer.save_model, utils.torch_utils.strip_optimizer, "
         "exports", "engine/trainer.py:768, utils/torch_utils.py:895",
         "checkpoints and exports are written to a temp name and renamed when complete: a kill or a full disk "
         "loses nothing"),
    Step("input checks", "policy", "engine.model.Model.train / val / predict / export / _load / _new",
         "engine/model.py:228, 491, 613, 753, 807",
         "bad input (data, model, source, numbers, device, project) is one error line before any run folder"),
    Step("label caches", "policy", "data.utils.load_dataset_cache_file", "data/utils.py:984",
         "a dataset's labels/*.cache is read with restricted unpickling; one that could run code is rebuilt"),
]
