// Starts a BatchInference run from the Temporal UI's Start Workflow form, as a user
// would, in Debian's headless chromium, then opens the run's page and screenshots its
// Current Details (the progress table the workflow publishes) while it runs.
//
// cmd/vbatch/ui_e2e_test.go runs it (task e2e:ui); it prints one JSON line on stdout,
// {"current_details": "…", "screenshot": "…"}, and exits non-zero on anything
// unexpected, after saving a screenshot of the page as it was to <screenshot>-failure.png.
//
//   node start-from-ui.mjs --ui http://127.0.0.1:8233 --workflow-id ID --input s3://b/k.jsonl \
//       --screenshot out.png --chromium /usr/bin/chromium
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: opt } = parseArgs({
  options: {
    ui: { type: 'string' },
    'workflow-id': { type: 'string' },
    input: { type: 'string' },
    screenshot: { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    namespace: { type: 'string', default: 'default' },
    'task-queue': { type: 'string', default: 'vbatch' },
    'workflow-type': { type: 'string', default: 'BatchInference' },
    'timeout-seconds': { type: 'string', default: '240' },
  },
});
for (const name of ['ui', 'workflow-id', 'input', 'screenshot']) {
  if (!opt[name]) fail(`--${name} is required`);
}
const id = opt['workflow-id'];
const deadline = Date.now() + Number(opt['timeout-seconds']) * 1000;
const log = (msg) => console.error(`[start-from-ui] ${msg}`);

function fail(msg) {
  console.error(`[start-from-ui] FAIL: ${msg}`);
  process.exit(1);
}

const browser = await chromium.launch({
  executablePath: opt.chromium,
  headless: true,
  // --no-sandbox: chromium refuses its sandbox as root (containers, CI). The UI is
  // on loopback; nothing else needs the network.
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run'],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
page.setDefaultTimeout(30_000);
try {
  await run(page);
} catch (err) {
  await page.screenshot({ path: opt.screenshot.replace(/\.png$/, '') + '-failure.png', fullPage: true }).catch(() => {});
  await browser.close();
  fail(err.stack || String(err));
}
await browser.close();

async function run(page) {
  const ns = encodeURIComponent(opt.namespace);
  log(`opening ${opt.ui}/namespaces/${ns}/workflows`);
  await page.goto(`${opt.ui}/namespaces/${ns}/workflows`);
  // The Workflows page's "Start Workflow" is a link styled as a button.
  await page.getByRole('button', { name: 'Start Workflow' }).click();
  await page.waitForURL(/\/workflows\/start-workflow/);

  log('filling the Start Workflow form');
  await page.getByLabel('Workflow ID').fill(id);
  await page.getByLabel('Task Queue').fill(opt['task-queue']);
  // Leaving the field makes the form look the task queue up: a queue without
  // pollers would never run the workflow.
  await page.getByLabel('Task Queue').press('Tab');
  await page.getByText('Task Queue is Active').waitFor();
  await page.getByLabel('Workflow Type').fill(opt['workflow-type']);
  const input = JSON.stringify({ input: opt.input });
  const editor = page.locator('.cm-content[contenteditable=true]'); // the Input's Data editor (CodeMirror)
  await editor.click();
  await page.keyboard.insertText(input);
  // Leaving the editor lets the form take the value in (it reformats the JSON).
  await page.getByLabel('Workflow Type').click();
  const typed = await editor.innerText();
  if (JSON.stringify(JSON.parse(typed)) !== input) {
    throw new Error(`the Input editor holds ${typed}, want ${input}`);
  }

  log('starting the workflow');
  const started = page.waitForResponse((r) => r.request().method() === 'POST' &&
    new URL(r.url()).pathname === `/api/v1/namespaces/${ns}/workflows/${encodeURIComponent(id)}`);
  await page.getByRole('button', { name: 'Start Workflow' }).click();
  const resp = await started;
  if (!resp.ok()) {
    throw new Error(`starting the workflow answered ${resp.status()}: ${await resp.text()}`);
  }
  const sent = resp.request().postDataJSON();
  const payloads = sent.input?.payloads ?? [];
  const data = payloads.length === 1 ? Buffer.from(payloads[0].data, 'base64').toString() : '';
  if (payloads.length !== 1 || JSON.stringify(JSON.parse(data)) !== input) {
    throw new Error(`the form sent input ${JSON.stringify(sent.input)}, want the one payload ${input}`);
  }
  // The confirmation links to the run.
  await page.getByRole('link', { name: 'Workflow started successfully' }).click();
  await page.waitForURL(new RegExp(`/workflows/${encodeURIComponent(id)}/[^/]+/`));

  log(`watching ${page.url()}`);
  await page.getByText('User Metadata', { exact: true }).click(); // the run page's tab
  await page.waitForURL(/\/user-metadata$/);
  const metadataPage = page.url();
  // Current Details are rendered from markdown into an iframe. Wait until they show
  // chunks answered while the run is still generating, reloading as a user would.
  for (;;) {
    const details = await currentDetails(page);
    const phase = /^vbatch · .+ · (\w+)$/m.exec(details)?.[1]; // the table's title line
    const done = /^requests\s+(\d+)/m.exec(details);
    if (phase === 'generating' && done && Number(done[1]) > 0) {
      await page.screenshot({ path: opt.screenshot, fullPage: true });
      log(`screenshot of the running workflow's Current Details: ${opt.screenshot}`);
      console.log(JSON.stringify({ current_details: details, screenshot: opt.screenshot }));
      return;
    }
    if (['merging', 'reporting', 'done'].includes(phase)) {
      throw new Error(`the run got past generating before the page showed a chunk done:\n${details}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`no progress shown in time; Current Details say:\n${details}`);
    }
    await page.waitForTimeout(1000);
    await page.goto(metadataPage);
  }
}

// currentDetails returns the text of the Current Details section, "" while the
// workflow has published none: the markdown is rendered into the first iframe after
// the section's heading.
async function currentDetails(page) {
  await page.getByText('Current Details', { exact: true }).waitFor();
  const rendered = page.locator('xpath=//*[normalize-space(text())="Current Details"]/following::iframe[1]');
  if (await rendered.count() === 0) {
    return '';
  }
  return (await rendered.contentFrame().locator('body').innerText()).trim();
}
