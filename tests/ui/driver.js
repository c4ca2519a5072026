// A small remote control for Debian's Chromium, driven by the Python tests (tests/ui/browser.py) over
// stdin/stdout: one JSON command per line in, one JSON answer per line out. playwright-core (from npm,
// never a downloaded browser) drives /usr/bin/chromium. Pages live in named browser contexts, so two
// users (an administrator, a clinician) can be signed in side by side with their own cookies.
const { chromium } = require('playwright-core');
const fs = require('fs');
const readline = require('readline');

const [axePath] = process.argv.slice(2);
const pages = {};     // name -> page
const contexts = {};  // name -> context
const logs = {};      // name -> console / page errors / failed responses
let browser;

const out = obj => process.stdout.write(JSON.stringify(obj) + '\n');

function watch(name, page) {
  logs[name] = [];
  page.on('console', m => { if (m.type() === 'error') logs[name].push(`console: ${m.text()}`.slice(0, 300)); });
  page.on('pageerror', e => logs[name].push(`pageerror: ${String(e)}`.slice(0, 300)));
  page.on('response', r => { if (r.status() >= 500) logs[name].push(`HTTP ${r.status()} ${r.url()}`); });
  page.on('dialog', d => d.accept());  // hx-confirm: the tests confirm
}

const ops = {
  async context({ name, width, height }) {
    if (contexts[name]) await contexts[name].close();
    const context = await browser.newContext({ viewport: { width, height }, acceptDownloads: true });
    contexts[name] = context;
    pages[name] = await context.newPage();
    watch(name, pages[name]);
    return {};
  },
  async viewport({ page, width, height }) { await pages[page].setViewportSize({ width, height }); return {}; },
  async goto({ page, url }) {
    const response = await pages[page].goto(url, { waitUntil: 'load', timeout: 60000 });
    return { url: pages[page].url(), status: response ? response.status() : 0 };
  },
  async reload({ page }) {
    const response = await pages[page].reload({ waitUntil: 'load', timeout: 60000 });
    return { url: pages[page].url(), status: response ? response.status() : 0 };
  },
  async fill({ page, selector, value }) { await pages[page].fill(selector, value, { timeout: 15000 }); return {}; },
  async type({ page, selector, value }) {
    await pages[page].locator(selector).pressSequentially(value, { delay: 40, timeout: 15000 });
    return {};
  },
  async select({ page, selector, value }) { await pages[page].selectOption(selector, value, { timeout: 15000 }); return {}; },
  async check({ page, selector }) { await pages[page].check(selector, { timeout: 15000 }); return {}; },
  async click({ page, selector, navigate }) {
    const p = pages[page];
    if (navigate) {
      await Promise.all([p.waitForNavigation({ timeout: 60000 }), p.click(selector, { timeout: 15000 })]);
    } else {
      await p.click(selector, { timeout: 15000 });
    }
    return { url: p.url() };
  },
  async press({ page, key }) { await pages[page].keyboard.press(key); return {}; },
  async text({ page, selector }) {
    const loc = pages[page].locator(selector);
    return { text: (await loc.count()) ? await loc.first().innerText() : null };
  },
  async texts({ page, selector }) { return { texts: await pages[page].locator(selector).allInnerTexts() }; },
  async attribute({ page, selector, name }) {
    return { value: await pages[page].locator(selector).first().getAttribute(name, { timeout: 15000 }) };
  },
  async count({ page, selector }) { return { count: await pages[page].locator(selector).count() }; },
  async wait({ page, selector, state, timeout }) {
    await pages[page].locator(selector).first().waitFor({ state: state || 'visible', timeout: timeout || 30000 });
    return {};
  },
  async waitText({ page, selector, text, timeout }) {
    await pages[page].waitForFunction(
      ([s, t]) => [...document.querySelectorAll(s)].some(e => e.innerText.includes(t)),
      [selector, text], { timeout: timeout || 30000, polling: 250 });
    return {};
  },
  async evaluate({ page, expression }) { return { value: await pages[page].evaluate(expression) }; },
  async url({ page }) { return { url: pages[page].url() }; },
  async screenshot({ page, path, fullPage }) {
    await pages[page].screenshot({ path, fullPage: !!fullPage });
    return { path };
  },
  async download({ page, selector, path }) {
    const p = pages[page];
    const [download] = await Promise.all([p.waitForEvent('download', { timeout: 60000 }), p.click(selector)]);
    await download.saveAs(path);
    return { path, name: download.suggestedFilename(), failure: await download.failure() };
  },
  async downloadEvent({ page, path, timeout }) {
    // A download that the page starts by itself (the export's hidden frame).
    const download = await pages[page].waitForEvent('download', { timeout: timeout || 60000 });
    await download.saveAs(path);
    return { path, name: download.suggestedFilename(), failure: await download.failure() };
  },
  async popup({ page, selector, name }) {
    const p = pages[page];
    const [popup] = await Promise.all([p.context().waitForEvent('page', { timeout: 30000 }), p.click(selector)]);
    await popup.waitForLoadState('load', { timeout: 60000 });
    pages[name] = popup;
    watch(name, popup);
    return { url: popup.url() };
  },
  async focusWalk({ page, steps }) {
    // Tab through the page: what gets focus, and whether its focus is drawn (an outline or a box shadow).
    const p = pages[page];
    const seen = [];
    for (let i = 0; i < steps; i++) {
      await p.keyboard.press('Tab');
      seen.push(await p.evaluate(() => {
        const e = document.activeElement;
        if (!e || e === document.body) return null;
        const s = getComputedStyle(e);
        const outlined = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2;
        return { tag: e.tagName, text: (e.innerText || e.value || e.getAttribute('aria-label') || '').trim().slice(0, 60),
                 visibleFocus: outlined || (s.boxShadow && s.boxShadow !== 'none') };
      }));
    }
    return { seen };
  },
  async axe({ page }) {
    const p = pages[page];
    // Evaluated through the DevTools protocol, not a <script>: the pages' Content-Security-Policy (no
    // inline script) stays in force for everything else.
    await p.evaluate(fs.readFileSync(axePath, 'utf8'));
    const result = await p.evaluate(async () => {
      const r = await window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } });
      return r.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ' :: ' + (n.failureSummary || '').slice(0, 200)) }));
    });
    return { violations: result };
  },
  async overflow({ page }) {
    // Whether the page itself scrolls sideways (wide tables scroll inside their own box instead).
    return { value: await pages[page].evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth) };
  },
  async logs({ page }) {  // what the page logged since the last time asked
    const seen = logs[page] || [];
    logs[page] = [];
    return { logs: seen };
  },
  async closePage({ page }) { await pages[page].close(); delete pages[page]; return {}; },
};

(async () => {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
  out({ ready: true, version: browser.version() });
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const command = JSON.parse(line);
    if (command.op === 'quit') break;
    try {
      const result = await ops[command.op](command);
      out({ ok: true, ...result });
    } catch (e) {
      out({ ok: false, error: String(e).slice(0, 2000) });
    }
  }
  await browser.close();
  process.exit(0);
})();
