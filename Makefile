# Loss-Landscape Lab — every set-up step lives here; `make workbook` and `make test` are all you need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BROWSER := $(VENV)/.browser
NB     ?=
NAME   ?=
EDIT   ?=
PARAMS ?=
GRID   ?=
SWEEP_ARGS ?=
# NB names chapters: one for run, sweep and new; none (all chapters) or several (NB='01 03') for refresh and
# robustness. Each is passed single-quoted, its own quotes escaped.
NB_ONE  = '$(subst ','\'',$(strip $(NB)))'
NB_LIST = $(foreach n,$(NB),'$(subst ','\'',$(n))')
CHAPTERS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: bench help install workbook test fast lint unit nbval robustness robustness-ci run sweep lab refresh report \
	report-preview new clean

help:
	@echo "make workbook   run every chapter (papermill, into runs/) and build report/index.html"
	@echo "make test       ruff + unit tests (and doctests) + nbval over notebooks/ + every chapter at another seed,"
	@echo "               scalar CPU kernels and one thread (robustness-ci)"
	@echo "make fast       ruff + the fast tier: pytest -m 'not slow' and the doctests (no nbval, sweeps, robustness"
	@echo "               or end-to-end runs, nor the few unit tests of seconds each; under a minute)"
	@echo "make robustness [NB='03 04']   the robustness matrix: every chapter (or those given) over seeds and CPU"
	@echo "               kernels/threads, into runs/robustness/"
	@echo "make run NB=01 PARAMS='-p dtype float64'   one chapter with parameters, into runs/"
	@echo "make sweep NB=01 GRID=sweeps/01_width_depth.yaml [SWEEP_ARGS='--scheduler tcp://host:8786']"
	@echo "               a resumable parameter sweep on Dask, into runs/<sweep>/ (results.csv, summary.png)"
	@echo "make refresh [NB=07 | NB='01 03']   re-execute chapters in place at defaults (all without NB): the only"
	@echo "               writer of the committed notebooks/ and figures/"
	@echo "make new NB=07 NAME=flatness   start notebooks/07_flatness.ipynb from notebooks/template.ipynb"
	@echo "make report     rebuild report/ (Jupyter Book, offline) from the default runs in runs/"
	@echo "make report-preview   the report of the committed chapters in notebooks/, into runs/report-preview/"
	@echo "make lab [EDIT=1]   JupyterLab: the committed chapters read-only (save copies under runs/lab/); EDIT=1"
	@echo "               saves over them"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[workbook,dev,bench,report]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" >/dev/null  # as the notebooks record it: JupyterLab opens them unmodified
	touch $(STAMP)

install: $(STAMP)

# what `make new` needs to copy the template (nbformat, in the [workbook] extra): not the peers or the report stack
BASE := $(VENV)/.installed-workbook
$(BASE): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[workbook]"
	touch $(BASE)

# Debian's chromium, for the report's browser test (tests/workbook/test_report_browser.py: playwright drives it and
# never downloads a browser of its own). Installed when absent and we are root with apt-get (a container, CI);
# elsewhere nothing is done and the test skips, saying why. The stamp is written once the browser is there.
$(BROWSER): $(STAMP)
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium \
	    || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; } \
	    || echo "make: could not install chromium; the report's browser test will skip"; fi
	@if [ -x /usr/bin/chromium ]; then touch $(BROWSER); fi

workbook: $(STAMP)
	$(PY) -m lab workbook

# The whole suite, and a guard around it: nothing in it may change the working tree (only `make refresh` writes
# the committed notebooks/ and figures/; every run writes under runs/). The tree's state — git status and the
# content of every tracked change — is compared before and after; any difference fails the suite.
# State: git status, the content of every tracked change, and the content hash of every untracked file git does not
# ignore (a run that overwrote a new chapter's uncommitted figure is caught too).
TREE_STATE = { git status --porcelain=v1 --untracked-files=all; git diff HEAD --binary; \
  git ls-files --others --exclude-standard -z | xargs -0 git hash-object --; } | cksum
test: $(STAMP) $(BROWSER)
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then $(TREE_STATE) > .tree-before.tmp; \
	  else echo "make test: not a git checkout, the working-tree guard is off"; fi
	$(MAKE) --no-print-directory lint unit nbval robustness-ci
	@if [ -f .tree-before.tmp ]; then $(TREE_STATE) > .tree-after.tmp; \
	  if ! cmp -s .tree-before.tmp .tree-after.tmp; then rm -f .tree-*.tmp; \
	    echo "make test changed the working tree (only make refresh may write committed files):"; \
	    git status --short; exit 1; fi; \
	  rm -f .tree-*.tmp; echo "make test: the working tree is as it was"; fi

lint: $(STAMP)
	$(PY) -m ruff check lab tests benchmarks notebooks

unit: $(STAMP)
	$(PY) -m pytest -q tests --doctest-modules lab

# The fast tier: everything but the tests marked slow (nbval, sweeps, robustness, end-to-end runner and report runs,
# and the unit tests of seconds each; tests/conftest.py marks them by path). `make test` still runs every test.
fast: $(STAMP)
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q -m "not slow" tests --doctest-modules lab

# nbval re-executes the committed chapters; their figures and tables go to runs/nbval/, never over figures/.
# One single-threaded kernel per core, a chapter per kernel (--dist loadfile), the longest chapters first: the
# claims hold at 1 thread too (the robustness matrix checks it), and on 2 cores it takes 270 s against ~630 s for
# one 2-thread kernel after another (the chapters' 2-thread run times in results/robustness).
NBVAL_FIRST := notebooks/06_lr_schedules.ipynb notebooks/04_hessian_eigen.ipynb notebooks/03_mlp_roughness.ipynb
NBVAL_ORDER := $(filter $(CHAPTERS),$(NBVAL_FIRST)) $(filter-out $(NBVAL_FIRST),$(CHAPTERS))  # chapters only, not template.ipynb
nbval: $(STAMP)
	LAB_FIGURES=$(CURDIR)/runs/nbval/figures LAB_RESULTS=$(CURDIR)/runs/nbval/results \
	  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
	  $(PY) -m pytest -q -n auto --dist loadfile --nbval-lax --nbval-current-env -p no:cacheprovider $(NBVAL_ORDER)

# every chapter once more at seed 1, ATEN_CPU_CAPABILITY=default (scalar kernels) and one thread: fails on any FAIL
robustness-ci: $(STAMP)
	$(PY) -m lab robustness --matrix ci --fresh --no-progress

# every chapter, or those in NB (NB=03 or NB='03 04')
robustness: $(STAMP)
	$(PY) -m lab robustness $(NB_LIST)

run: $(STAMP)
	@test -n "$(strip $(NB))" || { echo "usage: make run NB=01 [PARAMS='-p dtype float64']"; exit 2; }
	$(PY) -m lab run $(NB_ONE) $(PARAMS)

sweep: $(STAMP)
	@test -n "$(strip $(NB))" -a -n "$(GRID)" || { echo "usage: make sweep NB=01 GRID=sweeps/01_width_depth.yaml [SWEEP_ARGS=...]"; exit 2; }
	$(PY) -m lab sweep $(NB_ONE) --grid '$(subst ','\'',$(GRID))' $(SWEEP_ARGS)

report: $(STAMP)
	$(PY) -m lab report

# the report built from the committed, executed chapters in notebooks/ (nothing executed) into runs/report-preview/
report-preview: $(STAMP)
	$(PY) -m lab report --committed

# every chapter, or those in NB (NB=07 or NB='01 03')
refresh: $(STAMP)
	$(PY) -m lab refresh $(NB_LIST)

new: $(BASE)
	@test -n "$(strip $(NB))" -a -n "$(NAME)" || { echo "usage: make new NB=07 NAME=flatness"; exit 2; }
	$(PY) -m lab new $(NB_ONE) '$(subst ','\'',$(NAME))'

# JupyterLab on the repository, opening notebooks/; as root (a container, CI) it needs --allow-root. It prints the URL
# to open. The committed notebooks/ and figures/ are read-only in it (lab.workbook.jupyter): save copies under
# runs/lab/, or EDIT=1 to save over the chapters.
lab: $(STAMP)
	$(PY) -m pip install --quiet -e ".[jupyter]"
	$(PY) -m lab.workbook.jupyter --no-browser $(if $(EDIT),--edit-chapters) $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

clean:
	rm -rf runs report

# lab against PyHessian, curvlinops, hessian-eigenthings, loss-landscapes and torch-lr-finder in one run
bench: $(STAMP)
	$(PY) benchmarks/bench_peers.py
