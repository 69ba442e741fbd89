import AffinityPipeline
import AffinityPlot
import Foundation
import Hummingbird

/// The dashboard at `GET /`: one server-rendered page (inline CSS and SVG, about sixty lines of
/// vanilla JavaScript, nothing from the network) with the active model and pipeline, the traffic
/// of the last hour, the registry with activate buttons, and a playground that asks the service's
/// own API for recommendations with explanations.
///
/// Nothing the read or admin API guards is on the page itself: with an admin key set the registry
/// (paths) is fetched by the page with the key typed into it; with an API key set no user IDs are
/// suggested. The playground and the buttons send the typed key as `Authorization: Bearer`.
extension AffinityService {
    func dashboardPage() async throws -> String {
        let (current, events, users, sampleUsers) = await dashboardState(sampleUsers: access.apiKey == nil ? 40 : 0)
        let m = metrics.snapshot()
        var b = "<h1>Affinity</h1>\n"
        b += "<div class=\"card\" id=\"status\"><span class=\"stat\"><b>\(current == nil ? "no active model" : "ok")</b>status</span>"
        b += "<span class=\"stat\"><b>\(m.requests)</b>requests</span><span class=\"stat\"><b>\(m.serverErrors)</b>5xx</span>"
        b += "<span class=\"stat\"><b>\(m.clientErrors)</b>4xx</span>"
        b += "<span class=\"stat\"><b>\(m.latencyQuantile(0.5).map(Self.milliseconds) ?? "–")</b>p50 latency</span>"
        b += "<span class=\"stat\"><b>\(m.latencyQuantile(0.99).map(Self.milliseconds) ?? "–")</b>p99 latency</span>"
        b += "<span class=\"stat\"><b>\(events)</b>events stored</span><span class=\"stat\"><b>\(users)</b>users</span>"
        b += "<span class=\"stat\"><b>\(Self.uptime(m.uptimeSeconds))</b>up</span></div>\n"

        b += "<h2>Active model</h2>\n"
        if let current {
            let p = current.model
            var rows: [[String]] = [["registry id", String(current.record.id)], ["type", current.record.modelType],
                                    ["items", String(p.items.count)], ["retrieval", p.retrievalPath.rawValue],
                                    ["retrievers", p.retrievers.map { "\($0.retriever.name) (quota \($0.quota))" }.joined(separator: ", ")],
                                    ["ranker", p.retrievers.count > 1 ? p.ranker.name : "–"],
                                    ["re-rankers", p.rerankers.isEmpty ? "–" : p.rerankers.stages.map(\.name).joined(separator: " → ")]]
            if access.adminKey == nil { rows.insert(["path", current.record.path], at: 2) }
            b += HTML.table([.init(""), .init("")], rows, id: "active-model")
        } else {
            b += "<p class=\"warn\">No active model: register one (<code>POST /v1/models</code>) and activate it.</p>\n"
        }

        b += "<h2>Traffic</h2>\n<div class=\"grid\"><div>"
        b += linePlot([PlotSeries(name: "requests", points: m.lastHour.map { (Double(-$0.minutesAgo), Double($0.requests), "") })],
                      title: "Requests per minute, last hour", xTitle: "minutes ago", yTitle: "requests", size: (560, 300))
        b += "</div><div>"
        let bucketLabels = ServiceMetrics.latencyBuckets.map { "≤" + Self.milliseconds($0) } + [">5 s"]
        b += barChart(zip(bucketLabels, m.latencyBuckets).map { BarGroup(label: $0, values: [Double($1)]) }, series: ["requests"],
                      title: "Latency since start, every route", xTitle: "latency", yTitle: "requests", size: (560, 300), valueFormat: "%.0f")
        b += "</div></div>\n"
        b += HTML.table([.init("route"), .init("requests", numeric: true), .init("mean latency", numeric: true)],
                        m.byRoute.prefix(12).map { [$0.route, String($0.requests), Self.milliseconds($0.meanSeconds)] })
        if !m.eventsByType.isEmpty {
            b += "<p class=\"note\">Events received since start: " + HTML.escape(m.eventsByType.map { "\($0.type) \($0.count)" }.joined(separator: ", ")) + "</p>\n"
        }

        b += "<h2>Registry</h2>\n"
        var initialModels = "null"
        if access.adminKey == nil {
            let models = try await store.models()
            // JSON inside <script>: <, > and & as \u escapes, so no text (a model path holding
            // "</script>" or "<!--") can end the script or change how the parser reads it.
            initialModels = String(decoding: try JSON.encoded(ModelsOut(active: models.first(where: \.active)?.id, models: models)), as: UTF8.self)
                .replacingOccurrences(of: "<", with: "\\u003c").replacingOccurrences(of: ">", with: "\\u003e")
                .replacingOccurrences(of: "&", with: "\\u0026")
        } else {
            b += "<p>Admin key: <input id=\"adminkey\" type=\"password\" autocomplete=\"off\"> <button id=\"load-models\" type=\"button\">show</button></p>\n"
        }
        b += "<table id=\"registry\"><tr><th>id</th><th>type</th><th>path</th><th>registered</th><th></th></tr></table>\n"
        b += "<p class=\"note\" id=\"registry-status\"></p>\n"

        b += "<h2>Playground</h2>\n<form id=\"playground\" class=\"card\">\n"
        b += "<label>User <input id=\"user\" list=\"users\" placeholder=\"a user ID\" size=\"14\"></label> or "
        b += "<label>history <input id=\"history\" placeholder=\"item IDs, comma-separated\" size=\"32\"></label>\n"
        b += "<label>k <input id=\"k\" type=\"number\" value=\"10\" min=\"1\" max=\"\(limits.maxK)\" style=\"width:4em\"></label>\n"
        b += "<label><input id=\"explain\" type=\"checkbox\" checked> explain</label>\n"
        if access.apiKey != nil { b += "<label>API key <input id=\"apikey\" type=\"password\" autocomplete=\"off\"></label>\n" }
        b += "<button id=\"recommend\" type=\"submit\">Recommend</button>\n"
        b += "<datalist id=\"users\">" + sampleUsers.map { "<option value=\"\(HTML.escape($0))\">" }.joined() + "</datalist>\n</form>\n"
        b += "<p class=\"note\" id=\"playground-status\"></p>\n"
        b += "<table id=\"results\"><thead><tr><th class=\"num\">#</th><th>item</th><th>title</th><th class=\"num\">score</th><th>because</th></tr></thead><tbody></tbody></table>\n"
        b += "<p class=\"note\">API: <a href=\"/openapi.yaml\">openapi.yaml</a> · <a href=\"/metrics\">/metrics</a> · <a href=\"/health\">/health</a></p>\n"
        return HTML.page(title: "Affinity dashboard", body: b, script: "const initialModels = \(initialModels);\n" + Self.dashboardScript)
    }

    static func milliseconds(_ seconds: Double) -> String {
        seconds.isFinite ? (seconds < 0.01 ? String(format: "%.1f ms", seconds * 1000) : String(format: "%.0f ms", seconds * 1000)) : "> 5 s"
    }

    static func uptime(_ seconds: Double) -> String {
        seconds < 120 ? "\(Int(seconds)) s" : seconds < 7200 ? "\(Int(seconds / 60)) min" : String(format: "%.1f h", seconds / 3600)
    }

    /// The page's script: the playground and the registry, through the service's own API.
    static let dashboardScript = #"""
    const $ = id => document.getElementById(id);
    const esc = s => String(s ?? '').replace(/[&<>"']/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
    const auth = field => ($(field) && $(field).value) ? {'Authorization': 'Bearer ' + $(field).value} : {};
    async function answer(response) {
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error((body.error && body.error.message) || ('HTTP ' + response.status));
      return body;
    }
    async function recommend(event) {
      event.preventDefault();
      const user = $('user').value.trim(), k = Number($('k').value) || 10, explain = $('explain').checked;
      const history = $('history').value.split(/[\s,]+/).filter(x => x);
      const rows = $('results').tBodies[0];
      $('playground-status').textContent = 'asking...';
      try {
        const body = user
          ? await answer(await fetch('/v1/users/' + encodeURIComponent(user) + '/recommendations?fallback=popular&k=' + k + '&explain=' + explain, {headers: auth('apikey')}))
          : await answer(await fetch('/v1/recommendations', {method: 'POST', headers: Object.assign({'Content-Type': 'application/json'}, auth('apikey')),
                                                           body: JSON.stringify({history: history, k: k, explain: explain})}));
        rows.innerHTML = body.items.map((it, n) => '<tr class="result"><td class="num">' + (n + 1) + '</td><td>' + esc(it.item) + '</td><td>' + esc(it.title || '') +
          '</td><td class="num">' + it.score.toFixed(4) + '</td><td>' + esc((it.because || []).map(c => c.title || c.item).join('; ')) +
          (it.persona !== undefined ? ' (persona ' + it.persona + ')' : '') + '</td></tr>').join('');
        $('playground-status').textContent = body.items.length + ' items for ' + (user ? 'user ' + user : 'a history of ' + history.length) +
          ' from model ' + body.model.id + ' (' + body.model.type + '), retrieval: ' + body.retrieval + (body.note ? '; ' + body.note : '');
      } catch (e) { rows.innerHTML = ''; $('playground-status').textContent = 'error: ' + e.message; }
    }
    function renderModels(list) {
      const table = $('registry');
      while (table.rows.length > 1) table.deleteRow(1);
      for (const m of list.models) {
        const row = table.insertRow();
        row.innerHTML = '<td>' + m.id + '</td><td>' + esc(m.model_type) + '</td><td>' + esc(m.path) + '</td><td>' +
          new Date(m.registered_at * 1000).toISOString().slice(0, 16).replace('T', ' ') + '</td><td>' +
          (m.active ? '<b>active</b>' : '<button class="activate" data-id="' + m.id + '">activate</button>') + '</td>';
      }
      for (const b of table.querySelectorAll('button.activate')) b.onclick = () => activate(b.dataset.id);
      $('registry-status').textContent = list.models.length + ' registered';
    }
    async function loadModels() {
      try { renderModels(await answer(await fetch('/v1/models', {headers: auth('adminkey')}))); }
      catch (e) { $('registry-status').textContent = 'error: ' + e.message; }
    }
    async function activate(id) {
      $('registry-status').textContent = 'activating ' + id + '...';
      try { await answer(await fetch('/v1/models/' + id + '/activate', {method: 'POST', headers: auth('adminkey')})); location.reload(); }
      catch (e) { $('registry-status').textContent = 'error: ' + e.message; }
    }
    // Handlers are attached here, not inline: an inline handler resolves names against the form
    // first, where `recommend` is the button of that id.
    $('playground').addEventListener('submit', recommend);
    if ($('load-models')) $('load-models').addEventListener('click', loadModels);
    if (initialModels) renderModels(initialModels);
    """#
}
