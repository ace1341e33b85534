// The live dashboard: one page, one stylesheet, one script, served by monitor() with no build
// step. The script polls the JSON API every second and redraws; with writes allowed it shows
// drain / down / up buttons that PATCH the server. The Limits and Streams panels show only when
// the monitor has limits or streams. With sync, the figures are the totals over the
// live instances, and a table lists each instance.

/** The page (`<mount>/dashboard/`). */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>switchyard dashboard</title>
<link rel="stylesheet" href="dashboard.css">
<link rel="icon" href="data:,">
</head>
<body>
<header>
  <h1>switchyard</h1>
  <span id="summary">connecting…</span>
  <span id="status" class="status"></span>
</header>
<main>
  <section>
    <h2>Upstreams</h2>
    <div id="upstreams"></div>
  </section>
  <section>
    <h2>Requests per second, last minutes</h2>
    <svg id="chart" viewBox="0 0 600 160" preserveAspectRatio="none" role="img" aria-label="requests per second"></svg>
    <div id="legend"></div>
  </section>
  <section>
    <h2>Caches</h2>
    <div id="caches"></div>
  </section>
  <section id="limits-section" hidden>
    <h2>Limits</h2>
    <div id="limits"></div>
  </section>
  <section id="streams-section" hidden>
    <h2>Streams</h2>
    <div id="stream-zones"></div>
    <div id="stream-upstreams"></div>
  </section>
  <section id="instances-section" hidden>
    <h2>Instances</h2>
    <div id="instances"></div>
  </section>
</main>
<script src="dashboard.js"></script>
</body>
</html>
`;

/** The stylesheet. */
export const DASHBOARD_CSS = `body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2433; background: #f6f7f9; }
header { display: flex; gap: 1.5em; align-items: baseline; padding: .8em 1.2em; background: #1d2433; color: #fff; }
header h1 { font-size: 1.2em; margin: 0; }
main { padding: 1em 1.2em; }
section { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: .6em 1em 1em; margin-bottom: 1em; }
h2 { font-size: 1em; margin: .3em 0 .6em; }
h3 { font-size: .95em; margin: .8em 0 .3em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: right; padding: .25em .6em; border-bottom: 1px solid #eef0f3; white-space: nowrap; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
.state { font-weight: 600; padding: 0 .4em; border-radius: 3px; }
.state-up { background: #d9f2e3; color: #145c33; }
.state-draining { background: #fff1cc; color: #6b4d00; }
.state-down, .state-unhealthy, .state-unavail { background: #fde0e0; color: #8a1c1c; }
.state-checking { background: #e2e8ff; color: #24317a; }
button { font: inherit; font-size: .85em; margin-left: .3em; cursor: pointer; }
.status { margin-left: auto; font-size: .85em; opacity: .8; }
.status.error { color: #ffb4b4; opacity: 1; }
svg { width: 100%; height: 160px; background: #fbfcfd; border: 1px solid #eef0f3; }
#legend span { margin-right: 1em; font-size: .85em; }
.empty { color: #6b7385; }
`;

/** The script (no template literals, so it can live in this module as text). */
export const DASHBOARD_JS = String.raw`'use strict';
(function () {
  var HISTORY = 180;
  var COLORS = ['#2f6fdf', '#d9480f', '#2b8a3e', '#862e9c', '#e67700', '#0b7285', '#c2255c', '#5c940d'];
  var api = '../api/9/';
  var previous = {};
  var series = {};
  var canWrite = false;
  var busy = false;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) {
      if (k === 'text') node.textContent = attrs[k];
      else if (k === 'className') node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }
  function get(path) {
    return fetch(api + path, { headers: { accept: 'application/json' }, cache: 'no-store' }).then(function (r) {
      if (!r.ok) throw new Error(path + ': ' + r.status);
      return r.json();
    });
  }
  function setStatus(text, error) {
    var s = document.getElementById('status');
    s.textContent = text;
    s.className = error ? 'status error' : 'status';
  }
  function change(upstream, id, body) {
    return fetch(api + 'http/upstreams/' + encodeURIComponent(upstream) + '/servers/' + encodeURIComponent(id), {
      method: 'PATCH',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(body)
    }).then(function (r) {
      if (!r.ok) return r.json().then(function (e) { throw new Error(e.error ? e.error.text : String(r.status)); });
      return refresh();
    }).catch(function (err) { setStatus('change failed: ' + err.message, true); });
  }
  function button(label, upstream, id, body) {
    var b = el('button', { type: 'button', 'data-action': label, 'data-server': id, text: label });
    b.addEventListener('click', function () { change(upstream, id, body); });
    return b;
  }
  function codes(r) {
    return ['1xx', '2xx', '3xx', '4xx', '5xx'].map(function (c) { return r[c]; }).join(' / ');
  }
  function renderUpstreams(upstreams, elapsed) {
    var root = document.getElementById('upstreams');
    root.textContent = '';
    var names = Object.keys(upstreams);
    if (names.length === 0) root.appendChild(el('p', { className: 'empty', text: 'No upstreams.' }));
    names.forEach(function (name) {
      var u = upstreams[name];
      var head = ['Server', 'State', 'Weight', 'Active', 'Req/s', 'Requests', '1xx / 2xx / 3xx / 4xx / 5xx'];
      head.push('Fails', 'Unavail', 'Health checks', 'Response ms');
      if (canWrite) head.push('');
      var rows = u.peers.map(function (p) {
        var key = name + '\u0000' + p.id;
        var before = previous[key];
        var rate = before === undefined || elapsed <= 0 ? 0 : Math.max(0, (p.requests - before) / elapsed);
        previous[key] = p.requests;
        var checks = p.health_checks;
        var hc = checks.checks === 0 ? '-' : checks.checks + ' / ' + checks.fails + ' failed' + (checks.last_passed === false ? ', last failed' : '');
        var cells = [
          el('td', { text: p.id, title: p.server }),
          el('td', {}, [el('span', { className: 'state state-' + p.state, 'data-state': p.state, text: p.state })]),
          el('td', { text: String(p.weight) }),
          el('td', { text: String(p.active) }),
          el('td', { text: rate.toFixed(1) }),
          el('td', { text: String(p.requests) }),
          el('td', { text: codes(p.responses) }),
          el('td', { text: String(p.fails) }),
          el('td', { text: String(p.unavail) }),
          el('td', { text: hc }),
          el('td', { text: String(p.response_time) })
        ];
        if (canWrite) {
          var actions = el('td');
          if (p.state !== 'draining' && p.state !== 'down') actions.appendChild(button('drain', name, p.id, { drain: true }));
          if (p.state !== 'down') actions.appendChild(button('down', name, p.id, { down: true }));
          if (p.state === 'down' || p.state === 'draining') actions.appendChild(button('up', name, p.id, { down: false, drain: false }));
          cells.push(actions);
        }
        return el('tr', { 'data-server': p.id }, cells);
      });
      var total = u.peers.reduce(function (sum, p) { return sum + p.requests; }, 0);
      var before = previous[name];
      var rate = before === undefined || elapsed <= 0 ? 0 : Math.max(0, (total - before) / elapsed);
      previous[name] = total;
      var list = series[name] || (series[name] = []);
      list.push(rate);
      if (list.length > HISTORY) list.shift();
      var zombies = u.zombies ? ', ' + u.zombies + ' removed in flight' : '';
      root.appendChild(el('h3', { text: name + ' (' + u.peers.length + ' servers, ' + u.keepalive + ' idle connections' + zombies + ')' }));
      root.appendChild(el('table', { 'data-upstream': name }, [
        el('thead', {}, [el('tr', {}, head.map(function (h) { return el('th', { text: h }); }))]),
        el('tbody', {}, rows)
      ]));
    });
  }
  function renderChart() {
    var svg = document.getElementById('chart');
    var legend = document.getElementById('legend');
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    legend.textContent = '';
    var names = Object.keys(series);
    var max = 1;
    names.forEach(function (n) { series[n].forEach(function (v) { if (v > max) max = v; }); });
    names.forEach(function (n, i) {
      var color = COLORS[i % COLORS.length];
      var points = series[n].map(function (v, j) {
        var x = (600 * (j + HISTORY - series[n].length)) / (HISTORY - 1);
        var y = 155 - (150 * v) / max;
        return x.toFixed(1) + ',' + y.toFixed(1);
      }).join(' ');
      var line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
      line.setAttribute('points', points);
      line.setAttribute('fill', 'none');
      line.setAttribute('stroke', color);
      line.setAttribute('stroke-width', '2');
      svg.appendChild(line);
      var last = series[n][series[n].length - 1] || 0;
      var item = el('span', { text: n + ': ' + last.toFixed(1) + ' req/s (max ' + max.toFixed(1) + ')' });
      // Through the CSSOM: the page's policy forbids inline style attributes.
      item.style.color = color;
      legend.appendChild(item);
    });
  }
  function renderCaches(caches) {
    var root = document.getElementById('caches');
    root.textContent = '';
    var names = Object.keys(caches);
    if (names.length === 0) {
      root.appendChild(el('p', { className: 'empty', text: 'No caches.' }));
      return;
    }
    var rows = names.map(function (name) {
      var c = caches[name];
      var served = c.hit.responses + c.stale.responses + c.updating.responses + c.revalidated.responses;
      var all = served + c.miss.responses + c.expired.responses + c.bypass.responses;
      var ratio = all === 0 ? '-' : ((100 * served) / all).toFixed(1) + ' %';
      return el('tr', { 'data-cache': name }, [
        el('td', { text: name }),
        el('td', { text: ratio }),
        el('td', { text: String(c.hit.responses) }),
        el('td', { text: String(c.miss.responses) }),
        el('td', { text: String(c.stale.responses + c.updating.responses) }),
        el('td', { text: (c.size / 1024).toFixed(1) + ' KiB' + (c.max_size ? ' of ' + (c.max_size / 1048576).toFixed(0) + ' MiB' : '') })
      ]);
    });
    root.appendChild(el('table', {}, [
      el('thead', {}, [el('tr', {}, ['Cache', 'Hit ratio', 'Hits', 'Misses', 'Stale / updating', 'Size'].map(function (h) { return el('th', { text: h }); }))]),
      el('tbody', {}, rows)
    ]));
  }
  function renderLimits(reqs, conns) {
    var section = document.getElementById('limits-section');
    var zones = Object.keys(reqs).map(function (z) { return ['requests', z, reqs[z]]; })
      .concat(Object.keys(conns).map(function (z) { return ['connections', z, conns[z]]; }));
    section.hidden = zones.length === 0;
    if (section.hidden) return;
    var root = document.getElementById('limits');
    root.textContent = '';
    var rows = zones.map(function (z) {
      var c = z[2];
      var dry = (c.delayed_dry_run || 0) + (c.rejected_dry_run || 0);
      return el('tr', { 'data-zone': z[1], 'data-kind': z[0] }, [
        el('td', { text: z[1] }),
        el('td', { text: z[0] }),
        el('td', { text: String(c.passed) }),
        el('td', { text: z[0] === 'requests' ? String(c.delayed) : '-' }),
        el('td', { text: String(c.rejected), 'data-rejected': String(c.rejected) }),
        el('td', { text: String(dry) })
      ]);
    });
    var head = ['Zone', 'Limits', 'Passed', 'Delayed', 'Rejected', 'Dry run (would delay / reject)'];
    root.appendChild(el('table', {}, [
      el('thead', {}, [el('tr', {}, head.map(function (h) { return el('th', { text: h }); }))]),
      el('tbody', {}, rows)
    ]));
  }
  function bytes(n) {
    if (n < 1024) return n + ' B';
    if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
    if (n < 1073741824) return (n / 1048576).toFixed(1) + ' MiB';
    return (n / 1073741824).toFixed(2) + ' GiB';
  }
  function table(head, rows, attrs) {
    return el('table', attrs || {}, [
      el('thead', {}, [el('tr', {}, head.map(function (h) { return el('th', { text: h }); }))]),
      el('tbody', {}, rows)
    ]);
  }
  // TCP/UDP (streamBalance): the server zones and the stream side of their pools; hidden without streams.
  function renderStreams(zones, upstreams) {
    var section = document.getElementById('streams-section');
    var zoneNames = Object.keys(zones);
    var names = Object.keys(upstreams);
    section.hidden = zoneNames.length === 0 && names.length === 0;
    if (section.hidden) return;
    var root = document.getElementById('stream-zones');
    root.textContent = '';
    var rows = zoneNames.map(function (name) {
      var z = zones[name];
      var s = z.sessions;
      return el('tr', { 'data-zone': name }, [
        el('td', { text: name }),
        el('td', { text: String(z.processing) }),
        el('td', { text: String(z.connections) }),
        el('td', { text: s['2xx'] + ' / ' + s['4xx'] + ' / ' + s['5xx'] }),
        el('td', { text: String(s.total) }),
        el('td', { text: String(z.discarded) }),
        el('td', { text: bytes(z.received), 'data-bytes': String(z.received) }),
        el('td', { text: bytes(z.sent), 'data-bytes': String(z.sent) })
      ]);
    });
    root.appendChild(table(['Zone', 'Processing', 'Connections', 'Sessions 2xx / 4xx / 5xx', 'Sessions', 'Discarded', 'Received', 'Sent'], rows));
    var ups = document.getElementById('stream-upstreams');
    ups.textContent = '';
    names.forEach(function (name) {
      var u = upstreams[name];
      var peers = u.peers.map(function (p) {
        return el('tr', { 'data-server': p.id }, [
          el('td', { text: p.id, title: p.server }),
          el('td', {}, [el('span', { className: 'state state-' + p.state, 'data-state': p.state, text: p.state })]),
          el('td', { text: String(p.active) }),
          el('td', { text: String(p.connections) }),
          el('td', { text: bytes(p.sent), 'data-bytes': String(p.sent) }),
          el('td', { text: bytes(p.received), 'data-bytes': String(p.received) }),
          el('td', { text: String(p.connect_time) }),
          el('td', { text: String(p.first_byte_time) }),
          el('td', { text: String(p.response_time) }),
          el('td', { text: String(p.fails) }),
          el('td', { text: String(p.unavail) })
        ]);
      });
      var zombies = u.zombies ? ', ' + u.zombies + ' removed in flight' : '';
      ups.appendChild(el('h3', { text: name + ' (TCP/UDP, ' + u.peers.length + ' servers' + zombies + ')' }));
      var head = ['Server', 'State', 'Active', 'Connections', 'Sent', 'Received', 'Connect ms', 'First byte ms', 'Response ms', 'Fails', 'Unavail'];
      ups.appendChild(table(head, peers, { 'data-stream-upstream': name }));
    });
  }
  function renderInstances(summary, instances) {
    var section = document.getElementById('instances-section');
    section.hidden = typeof summary.instances !== 'number';
    if (section.hidden) return;
    var root = document.getElementById('instances');
    root.textContent = '';
    var streams = !document.getElementById('streams-section').hidden;
    var rows = Object.keys(instances).map(function (name) {
      var i = instances[name];
      var upstream = 0;
      Object.keys(i.upstreams).forEach(function (u) {
        i.upstreams[u].peers.forEach(function (p) { upstream += p.requests; });
      });
      var sessions = 0;
      if (i.stream) Object.keys(i.stream.server_zones).forEach(function (z) { sessions += i.stream.server_zones[z].connections; });
      return el('tr', { 'data-instance': name }, [
        el('td', { text: name + (i.self ? ' (this one)' : '') }),
        el('td', { text: i.host }),
        el('td', { text: String(i.pid) }),
        el('td', { text: (i.age / 1000).toFixed(1) + ' s' }),
        el('td', { text: i.requests ? String(i.requests.total) : '-' }),
        el('td', { text: String(upstream) }),
        streams ? el('td', { text: i.stream ? String(sessions) : '-' }) : null
      ]);
    });
    var head = ['Instance', 'Host', 'PID', 'Last report', 'Requests', 'Upstream requests'];
    if (streams) head.push('Stream connections');
    root.appendChild(el('table', {}, [
      el('thead', {}, [el('tr', {}, head.map(function (h) { return el('th', { text: h }); }))]),
      el('tbody', {}, rows)
    ]));
  }
  var last = 0;
  function refresh() {
    if (busy) return Promise.resolve();
    busy = true;
    var paths = ['switchyard', 'http/upstreams', 'http/caches', 'http/requests', 'switchyard/instances', 'http/limit_reqs', 'http/limit_conns',
      'stream/server_zones', 'stream/upstreams'];
    return Promise.all(paths.map(get)).then(function (r) {
      var now = Date.now();
      var elapsed = last === 0 ? 0 : (now - last) / 1000;
      last = now;
      canWrite = r[0].write === true;
      var mode = canWrite ? ', changes allowed' : ', read-only';
      var cluster = typeof r[0].instances === 'number' ? ', ' + r[0].instances + (r[0].instances === 1 ? ' instance' : ' instances') : '';
      document.getElementById('summary').textContent = 'version ' + r[0].version + ', up ' + r[0].uptime + ' s, ' + r[3].total + ' requests' + cluster + mode;
      renderUpstreams(r[1], elapsed);
      renderChart();
      renderCaches(r[2]);
      renderLimits(r[5], r[6]);
      renderStreams(r[7], r[8]);
      renderInstances(r[0], r[4]);
      setStatus('updated ' + new Date(now).toLocaleTimeString(), false);
    }).catch(function (err) {
      setStatus('cannot reach the API: ' + err.message, true);
    }).then(function () { busy = false; });
  }
  refresh();
  setInterval(refresh, 1000);
})();
`;
