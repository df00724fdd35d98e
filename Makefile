# Loss-Landscape Lab — every set-up step lives here; `make workbook` and `make test` are all you need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NB     ?= 01
PARAMS ?=
GRID   ?=
SWEEP_ARGS ?=

.PHONY: help install workbook test lint unit nbval robustness robustness-ci run sweep lab refresh report clean

help:
	@echo "make workbook   run every chapter (papermill, into runs/) and build report/index.html"
	@echo "make test       ruff + unit tests (and doctests) + nbval over notebooks/ + every chapter at another seed,"
	@echo "               scalar CPU kernels and one thread (robustness-ci)"
	@echo "make robustness the robustness matrix: every chapter over seeds and CPU kernels/threads, into runs/robustness/"
	@echo "make run NB=01 PARAMS='-p dtype float64'   one chapter with parameters, into runs/"
	@echo "make sweep NB=01 GRID=sweeps/01_width_depth.yaml [SWEEP_ARGS='--scheduler tcp://host:8786']"
	@echo "               a resumable parameter sweep on Dask, into runs/<sweep>/ (results.csv, summary.png)"
	@echo "make lab        JupyterLab   ·   make refresh   re-execute chapters in place at defaults"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lab)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

workbook: $(STAMP)
	$(PY) -m lab workbook

# The whole suite, and a guard around it: nothing in it may change the working tree (only `make refresh` writes
# the committed notebooks/ and figures/; every run writes under runs/). The tree's state — git status and the
# content of every tracked change — is compared before and after; any difference fails the suite.
# State: git status, the content of every tracked change, and the content hash of every untracked file git does not
# ignore (a run that overwrote a new chapter's uncommitted figure is caught too).
TREE_STATE = { git status --porcelain=v1 --untracked-files=all; git diff HEAD --binary; \
  git ls-files --others --exclude-standard -z | xargs -0 git hash-object --; } | cksum
test: $(STAMP)
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then $(TREE_STATE) > .tree-before.tmp; \
	  else echo "make test: not a git checkout, the working-tree guard is off"; fi
	$(MAKE) --no-print-directory lint unit nbval robustness-ci
	@if [ -f .tree-before.tmp ]; then $(TREE_STATE) > .tree-after.tmp; \
	  if ! cmp -s .tree-before.tmp .tree-after.tmp; then rm -f .tree-*.tmp; \
	    echo "make test changed the working tree (only make refresh may write committed files):"; \
	    git status --short; exit 1; fi; \
	  rm -f .tree-*.tmp; echo "make test: the working tree is as it was"; fi

lint: $(STAMP)
	$(PY) -m ruff check lab tests benchmarks

unit: $(STAMP)
	$(PY) -m pytest -q tests --doctest-modules lab

# nbval re-executes the committed chapters; their figures and tables go to runs/nbval/, never over figures/.
# One single-threaded kernel per core, a chapter per kernel (--dist loadfile), the longest chapters first: the
# claims hold at 1 thread too (the robustness matrix checks it), and on 2 cores it takes 270 s against ~630 s for
# one 2-thread kernel after another (the chapters' 2-thread run times in results/robustness).
NBVAL_FIRST := notebooks/06_lr_schedules.ipynb notebooks/04_hessian_eigen.ipynb notebooks/03_mlp_roughness.ipynb
NBVAL_ORDER := $(NBVAL_FIRST) $(filter-out $(NBVAL_FIRST),$(sort $(wildcard notebooks/*.ipynb)))
nbval: $(STAMP)
	LAB_FIGURES=$(CURDIR)/runs/nbval/figures LAB_RESULTS=$(CURDIR)/runs/nbval/results \
	  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
	  $(PY) -m pytest -q -n auto --dist loadfile --nbval-lax --nbval-current-env -p no:cacheprovider $(NBVAL_ORDER)

# every chapter once more at seed 1, ATEN_CPU_CAPABILITY=default (scalar kernels) and one thread: fails on any FAIL
robustness-ci: $(STAMP)
	$(PY) -m lab robustness --matrix ci --fresh --no-progress

robustness: $(STAMP)
	$(PY) -m lab robustness $(NB_LIST)

run: $(STAMP)
	$(PY) -m lab run '$(subst ','\'',$(NB))' $(PARAMS)

sweep: $(STAMP)
	@test -n "$(GRID)" || { echo "usage: make sweep NB=01 GRID=sweeps/01_width_depth.yaml [SWEEP_ARGS=...]"; exit 2; }
	$(PY) -m lab sweep '$(subst ','\'',$(NB))' --grid '$(subst ','\'',$(GRID))' $(SWEEP_ARGS)

report: $(STAMP)
	$(PY) -m lab report

refresh: $(STAMP)
	$(PY) -m lab refresh $(NB_LIST)

lab: $(STAMP)
	$(PY) -m pip install --quiet -e ".[jupyter]"
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf runs report
