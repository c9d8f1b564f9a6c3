"""OpenAI's graders, run here: `spec.py` reads grader objects (string_check, text_similarity, python, score_model,
label_model, multi), `template.py` fills their {{item.*}}/{{sample.*}} templates, `similarity.py`, `sandbox.py`
(python graders in a limited child process), `judge.py` (model graders and cosine) and `formula.py` (a multi
grader's calculate_output, never `eval`) score, and `run.py` puts them together (`Runner`, `grade_all`)."""
