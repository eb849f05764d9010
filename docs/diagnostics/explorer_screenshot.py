"""The README's screenshot of the run explorer (docs/explorer.png), taken in headless Chromium.

Made from the runs of:
    for m in fastrm chefer rollout; do fastrm-bench run --method $m --task vqav2 --limit 40 --output-dir runs/$m \\
        --metric perturbation --metric entropy --metric localisation --metric threshold; done
    fastrm-bench report runs --out report
Usage (needs selenium and the system's chromium + chromedriver):
    python docs/diagnostics/explorer_screenshot.py report/explorer.html docs/explorer.png [SAMPLE_ID] [TOKEN]
The table is sorted by FastRM's entropy, the sample chosen (default: the first two-token answer) and the
token clicked (default: the first, index 0).
"""

import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import Select

page, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
options = Options()
for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1500,1080"):
    options.add_argument(arg)
driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
try:
    driver.get(page.as_uri())
    time.sleep(1)
    Select(driver.find_element("id", "method")).select_by_visible_text("fastrm")
    driver.find_element("css selector", 'th[data-key="entropy"]').click()
    sample = sys.argv[3] if len(sys.argv) > 3 else driver.execute_script(  # the first two-token answer in the table
        "return [...document.querySelectorAll('#samples tbody tr')].map(r => r.dataset.id)"
        ".find(id => DATA.groups[0].samples.find(s => s.id === id).tokens.length > 1)")
    driver.find_element("css selector", f'#samples tbody tr[data-id="{sample}"] td').click()
    driver.execute_script("const t = document.querySelector('.tablebox'); t.scrollLeft = 0; t.scrollTop = 0")
    time.sleep(0.5)
    token = sys.argv[4] if len(sys.argv) > 4 else "0"
    driver.find_element("css selector", f'.tokens button[data-token="{token}"]').click()
    time.sleep(1)
    driver.save_screenshot(str(out))
    print(f"{out}: sample {sample}, token {token}")
finally:
    driver.quit()
