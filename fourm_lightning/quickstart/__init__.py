"""The quickstart: the main job's plan, stages, stage records, figures and report."""
