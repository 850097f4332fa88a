"""Everything that touches YOLOv5: the blocks built from its modules, the hook into `parse_model`
(`registry`), the compatibility shims (`compat`), safe checkpoints, the run-time checks of the
train/val/detect/export wrappers (`entrypoint`, `preflight`, `fmap`, `input_checks`, `resume`), export
(`deploy`) and git clones (`clone`)."""
