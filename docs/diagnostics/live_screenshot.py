"""The documentation's screenshot of the live demo (docs/live-demo.png), taken in headless Chromium.

Usage (needs Gradio, selenium and the system's chromium + chromedriver):
    PYTHONPATH=. python docs/diagnostics/live_screenshot.py docs/live-demo.png
Serves the shipped model in this process, asks the first example's question and takes the page once the answer,
its maps, the confidence and the measured wait are shown.
"""

import socket
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from fastrm_bench.serve import build_app

out = sys.argv[1]
app = build_app("tiny-llava-shapes", device="cpu")
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
options = Options()
for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1450"):
    options.add_argument(arg)
driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
try:
    driver.get(f"http://127.0.0.1:{port}/")
    for _ in range(600):
        buttons = [b for b in driver.find_elements("tag name", "button") if b.text == "Answer and explain"]
        if buttons:
            break
        time.sleep(0.1)
    buttons[0].click()
    for _ in range(600):  # the line is not in the page until it has a text
        if "You waited" in " ".join(e.text for e in driver.find_elements("id", "live-waited")):
            break
        time.sleep(0.1)
    else:
        raise SystemExit("no answer in 60 s (is fastrm_bench this checkout's? run from its root with PYTHONPATH=.)")
    time.sleep(1)
    driver.save_screenshot(out)
    print(out)
finally:
    driver.quit()
    app.close()
