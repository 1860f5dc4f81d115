"""Extensions inside the kit: every module in this folder is imported by
:func:`llmtrsr_utils.systems.load_extensions` before the kit lists its systems, so a file here
registers a paradigm (``@systems.paradigm("name")``) or a baseline (``@systems.baseline("name",
"Label")``) by plain name, and it appears in the CLI's ``all``, Table 2 and the figures. Import
only :mod:`llmtrsr_utils.systems` at a file's top (the registry is read without torch). See the
README's recipes.
"""
