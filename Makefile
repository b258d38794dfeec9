# Only python3 is assumed. Every target creates .venv and installs the project when needed.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench lint clean

# Debian programs the integration tests run for real (Prometheus, promtool, Alertmanager).
DEBIAN_TOOLS := /usr/bin/prometheus /usr/bin/promtool /usr/bin/prometheus-alertmanager

$(DEBIAN_TOOLS):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus prometheus-alertmanager

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/kpistream demo

lint: $(STAMP)
	$(VENV)/bin/ruff check kpistream tests bench
	$(VENV)/bin/lint-imports

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: lint $(DEBIAN_TOOLS)
	$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(PY) bench/engine_throughput.py
	$(PY) bench/alert_latency.py
	$(PY) bench/backtest_speed.py
	$(PY) bench/scale_out.py
	$(PY) bench/forecast_quality.py --series 300 --json bench/out/forecast_quality.json
	$(PY) bench/nab_backtest.py
	$(PY) bench/anomaly_compare.py
	$(PY) bench/anomaly_synthetic.py
	$(PY) bench/anomaly_cost.py
	$(PY) bench/anomaly_demo.py --rate 200 --hours 24 --warmup-hours 12

clean:
	rm -rf $(VENV)
