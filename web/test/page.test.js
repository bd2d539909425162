// Static checks of the demo page: the ids the browser tests rely on, accessibility
// attributes, no external fetches, and that every script parses.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');

const dir = path.join(__dirname, '..');
const read = (f) => fs.readFileSync(path.join(dir, f), 'utf8');

test('index.html has the stable ids the browser tests read', () => {
  const html = read('index.html');
  for (const id of ['tick-latest', 'tick-gaps', 'tick-dups', 'transport', 'chat-log', 'chat-input',
    'chat-send', 'presence', 'typing', 'banner']) {
    assert.match(html, new RegExp(`id="${id}"`), id);
  }
  assert.match(html, /id="banner"[^>]*role="status"/);
  assert.match(html, /id="banner"[^>]*aria-live="polite"/);
  assert.match(html, /name="viewport" content="width=device-width, initial-scale=1"/);
  assert.match(html, /<html lang="en">/);
  assert.match(html, /gaps: <span id="tick-gaps">0<\/span> \/ duplicates: <span id="tick-dups">0<\/span>/);
  // Every input has a label.
  for (const m of html.matchAll(/<input id="([^"]+)"/g)) {
    assert.match(html, new RegExp(`<label for="${m[1]}"`), `label for ${m[1]}`);
  }
});

test('the page loads only its own four files', () => {
  const html = read('index.html');
  const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]).sort();
  assert.deepEqual(refs, ['/app.css', '/app.js', '/tidewire.js']);
  for (const f of ['index.html', 'app.js', 'app.css', 'tidewire.js']) {
    const text = read(f);
    assert.doesNotMatch(text, /https?:\/\/(?!demo\.test)[a-z0-9.-]+\.[a-z]{2,}/i, `${f} names no external host`);
    if (f.endsWith('.css')) assert.doesNotMatch(text, /@import|url\(/, `${f} pulls nothing in`);
  }
});

test('scripts parse as classic scripts; tidewire.js defines the global', () => {
  for (const f of ['app.js', 'tidewire.js']) new vm.Script(read(f), { filename: f });
  const sandbox = {};
  sandbox.globalThis = sandbox;
  vm.runInNewContext(read('tidewire.js'), sandbox);
  assert.equal(typeof sandbox.Tidewire.Client, 'function');
});
