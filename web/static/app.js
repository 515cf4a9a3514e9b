// The live page of a pyconpro pipeline (served by pyconpro.web; docs/operations.md).
// One EventSource on "events": a "hello" snapshot first, then "values" (at most a few updates
// per tag and second) and "status" (the pipeline's state, about once a second). It reconnects
// by itself when the web process restarts, and starts over from the next "hello".
"use strict";
(function () {
  const COOKIE = "pyconpro_token";
  const HEALTH_TEXT = { ok: "", warn: "", error: "", off: "", unknown: "no status yet" };
  const st = {
    status: null, values: {}, hist: {}, offset: 0, historyS: 300,
    open: new Set(), cards: new Map(), sections: new Map(), es: null, retry: 0,
  };

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---------------------------------------------------------------- token and connection

  function setToken(token) {
    document.cookie = COOKIE + "=" + encodeURIComponent(token) + "; path=/; SameSite=Strict";
  }

  function tokenFromHash() {
    // A link like http://host:8780/#token=... logs in; the fragment never reaches a server log.
    const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (m) {
      setToken(decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function setConn(what, text) {
    const c = document.getElementById("conn");
    c.dataset.conn = what;
    c.textContent = text || what;
  }

  function connect() {
    if (st.es) st.es.close();
    clearTimeout(st.retry);
    setConn("connecting");
    const es = new EventSource("events");
    st.es = es;
    es.addEventListener("hello", (e) => {
      const d = JSON.parse(e.data);
      st.values = d.values || {};
      st.hist = d.history || {};
      onStatus(d.status);
      for (const key of Object.keys(st.values)) showValue(key);
      // How many streams this page has had (1, then one more after each reconnection).
      document.body.dataset.streams = String(Number(document.body.dataset.streams || 0) + 1);
      setConn("live");
    });
    es.addEventListener("values", (e) => {
      const d = JSON.parse(e.data);
      for (const key of Object.keys(d)) {
        st.values[key] = d[key];
        addPoint(key, d[key].p);
        showValue(key);
      }
    });
    es.addEventListener("status", (e) => onStatus(JSON.parse(e.data)));
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        es.close();
        checkAuth();  // refused (401), or the browser gave up: find out which
      } else {
        setConn("reconnecting");
      }
    };
  }

  async function checkAuth() {
    try {
      const r = await fetch("api/status", { cache: "no-store", credentials: "same-origin" });
      if (r.status === 401) {
        setConn("token", "token needed");
        document.getElementById("login").hidden = false;
        return;
      }
    } catch (err) {
      // the web process is down (restarting?): try again below
    }
    setConn("reconnecting");
    st.retry = setTimeout(connect, 2000);
  }

  // ---------------------------------------------------------------- formatting

  function fmt(v) {
    if (v === null || v === undefined) return "—";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return String(v);
      const a = Math.abs(v);
      if (a !== 0 && (a >= 1e7 || a < 1e-4)) return v.toExponential(5);
      return String(+v.toPrecision(7));
    }
    return String(v);
  }

  function num(v, digits) {
    return typeof v === "number" ? (digits === undefined ? String(v) : v.toFixed(digits)) : "–";
  }

  function ago(tWallMs) {
    if (typeof tWallMs !== "number") return "";
    const s = Math.max(0, (Date.now() - st.offset - tWallMs) / 1000);
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    return (s / 3600).toFixed(1) + " h ago";
  }

  function summary(v) {
    if (Array.isArray(v)) {
      if (v.length <= 8 && v.every((x) => x === null || typeof x !== "object")) {
        return "[" + v.map(fmt).join(", ") + "]";
      }
      return "[" + v.length + " elements]";
    }
    const keys = Object.keys(v);
    return "{" + keys.slice(0, 3).join(", ") + (keys.length > 3 ? ", … " + keys.length + " members" : "") + "}";
  }

  // A value: a scalar as text; an array or a UDT as a tree of <details>, built only as far as
  // it is open (a REAL[500] costs nothing while closed), open branches kept across updates.
  function valueNode(value, key, path, label) {
    if (value === null || typeof value !== "object") {
      if (!label) return document.createTextNode(fmt(value));
      const leaf = el("span", "leaf");
      leaf.append(el("span", "k", label + ": "), document.createTextNode(fmt(value)));
      return leaf;
    }
    const id = key + "\u0000" + path;
    const d = el("details");
    d.dataset.path = path;
    const s = el("summary");
    if (label) s.append(el("span", "k", label + ": "));
    s.append(document.createTextNode(summary(value)));
    d.append(s);
    const fill = () => {
      if (d.childElementCount > 1) return;
      const entries = Array.isArray(value) ? value.map((x, i) => [String(i), x]) : Object.entries(value);
      for (const [k, x] of entries) d.append(valueNode(x, key, path + "/" + k, k));
    };
    if (st.open.has(id)) {
      d.open = true;
      fill();
    }
    d.addEventListener("toggle", () => {
      if (d.open) {
        st.open.add(id);
        fill();
      } else {
        st.open.delete(id);
      }
    });
    return d;
  }

  // ---------------------------------------------------------------- sparklines

  function addPoint(key, p) {
    if (!p) return;
    const h = st.hist[key] || (st.hist[key] = []);
    h.push(p);
    const cut = p[0] - st.historyS * 1000;
    let drop = 0;
    while (drop < h.length && h[drop][0] < cut) drop++;
    if (h.length - drop > 2000) drop = h.length - 2000;
    if (drop) h.splice(0, drop);
  }

  function drawSpark(card, key) {
    const h = st.hist[key] || [];
    const line = card.querySelector("polyline");
    const range = card.querySelector(".range");
    card.classList.toggle("nospark", h.length < 2);
    if (h.length < 2) {
      line.setAttribute("points", "");
      range.replaceChildren();
      return;
    }
    // The window, or less while there is less history: the line always spans the width.
    const t1 = h[h.length - 1][0];
    const t0 = Math.max(t1 - st.historyS * 1000, h[0][0]);
    let lo = Infinity;
    let hi = -Infinity;
    for (const p of h) {
      lo = Math.min(lo, p[1]);
      hi = Math.max(hi, p[1]);
    }
    const height = hi - lo || 1;
    line.setAttribute("points", h.map((p) =>
      ((p[0] - t0) / (t1 - t0 || 1) * 100).toFixed(2) + "," + (22 - (p[1] - lo) / height * 20).toFixed(2)).join(" "));
    const span = (t1 - t0) / 1000;
    const last = span >= 120 ? Math.round(span / 60) + " min" : Math.max(1, Math.round(span)) + " s";
    range.replaceChildren(el("span", "", "min " + fmt(lo)), el("span", "", "last " + last),
      el("span", "", "max " + fmt(hi)));
  }

  // ---------------------------------------------------------------- cards

  const STATS = [["rate", "rate/s"], ["samples", "samples"], ["gaps", "gaps"],
    ["outages", "outages"], ["missed", "missed"], ["timeouts", "timeouts"]];

  function section(plc) {
    let s = st.sections.get(plc);
    if (!s) {
      s = el("section", "plc");
      s.dataset.plc = plc;
      const h = el("h2");
      h.append(el("span", "plcname", plc), el("span", "session", ""));
      s.append(h, el("div", "tags"));
      document.getElementById("plcs").append(s);
      st.sections.set(plc, s);
    }
    return s;
  }

  function card(key) {
    let c = st.cards.get(key);
    if (c) return c;
    const slash = key.indexOf("/");
    const plc = key.slice(0, slash);
    c = el("article", "tag");
    c.dataset.key = key;
    c.dataset.health = "unknown";
    const head = el("div", "head");
    head.append(el("span", "name", key.slice(slash + 1)), el("span", "type", ""), el("span", "state", "?"));
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 100 24");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.append(document.createElementNS("http://www.w3.org/2000/svg", "polyline"));
    const dl = el("dl");
    for (const [name, label] of STATS) {
      const d = el("div");
      d.dataset.stat = name;
      d.append(el("dt", "", label), el("dd", "", "–"));
      dl.append(d);
    }
    c.append(head, el("div", "value", "—"), svg, el("div", "range"), dl, el("div", "problem"), el("div", "lasterr"));
    section(plc).querySelector(".tags").append(c);
    st.cards.set(key, c);
    return c;
  }

  function showValue(key) {
    const u = st.values[key];
    if (!u) return;
    const c = card(key);
    c.querySelector(".value").replaceChildren(valueNode(u.v, key, "", ""));
    if (u.ty) c.querySelector(".type").textContent = u.ty;
    drawSpark(c, key);
  }

  function setStat(c, name, text) {
    c.querySelector('[data-stat="' + name + '"] dd').textContent = text;
  }

  function showTag(t) {
    const c = card(t.key);
    c.dataset.health = t.health;
    // Still RUNNING a moment after its PLC's session went down: say what is wrong.
    c.querySelector(".state").textContent =
      t.health === "error" && t.state === "RUNNING" ? "PLC DOWN" : t.state || "?";
    if (t.type) c.querySelector(".type").textContent = t.type;
    setStat(c, "rate", num(t.rate, 1));
    setStat(c, "samples", num(t.samples));
    setStat(c, "gaps", num(t.gaps));
    setStat(c, "outages", num(t.outages) + (t.outage ? "+1" : ""));
    setStat(c, "missed", num((t.outage_missed || 0) + (t.outage ? t.outage.missed || 0 : 0)));
    setStat(c, "timeouts", num(t.timeouts));
    c.querySelector(".problem").textContent = t.problem || HEALTH_TEXT[t.health] || "";
    c.lastError = t.last_error;
    showError(c);
  }

  function showError(c) {
    const e = c.lastError;
    c.querySelector(".lasterr").textContent = e ? "last error " + ago(e.t_wall_ms) + ": " + (e.message || e.kind) : "";
  }

  // ---------------------------------------------------------------- the pipeline

  function onStatus(s) {
    if (!s) return;
    st.status = s;
    st.offset = Date.now() - s.now_wall_ms;
    st.historyS = s.history_s || st.historyS;
    const tags = new Map(s.tags.map((t) => [t.key, t]));
    for (const p of s.plcs) {
      const sec = section(p.name);
      const sess = sec.querySelector(".session");
      sess.dataset.up = p.up === true ? "true" : p.up === false ? "false" : "";
      sess.textContent = p.address ? sessionText(p) : "";
      for (const key of p.tags) if (tags.has(key)) showTag(tags.get(key));
    }
    for (const [key, c] of st.cards) {  // removed by a reload
      if (!tags.has(key)) {
        c.remove();
        st.cards.delete(key);
      }
    }
    for (const [plc, sec] of st.sections) {
      if (!sec.querySelector(".tag")) {
        sec.remove();
        st.sections.delete(plc);
      }
    }
    showSummary();
    showTables(s);
  }

  function sessionText(p) {
    const where = p.address + ":" + p.port;
    if (p.up) return "session up · " + where;
    let text = "session DOWN · " + where;
    if (typeof p.down_for_s === "number") text += " for " + Math.round(p.down_for_s) + " s";
    if (p.last_failure) text += ": " + p.last_failure;
    return text;
  }

  function showSummary() {
    const s = st.status;
    if (!s) return;
    const sup = s.supervisor;
    const parts = [];
    if (sup.answering) {
      parts.push("pipeline " + (sup.state || "?"));
      if (typeof s.bus.rate_msgs_s === "number") parts.push("bus " + Math.round(s.bus.rate_msgs_s) + " msg/s");
    } else {
      parts.push(sup.silent_for_s === null ? "waiting for the supervisor" : "the supervisor does not answer");
    }
    parts.push(s.tags.length + " tags");
    document.getElementById("summary").textContent = parts.join(" · ");
    const notice = document.getElementById("notice");
    notice.hidden = !!sup.answering || sup.silent_for_s === null;
    notice.textContent = notice.hidden ? "" : "The supervisor has not answered for " +
      Math.round(sup.silent_for_s) + " s (is `pyconpro run` still running?): values still come " +
      "from the bus, connection states may be old.";
  }

  function row(cells, bad) {
    const tr = el("tr");
    cells.forEach((text, i) => tr.append(el("td", bad.includes(i) ? "bad" : "", text)));
    return tr;
  }

  function showTables(s) {
    const BAD = ["BACKOFF", "EXITED", "FATAL"];
    document.querySelector("#procs tbody").replaceChildren(...s.processes.map((p) => row(
      [p.name, p.kind, p.state, p.pid ? String(p.pid) : "–", num(p.restarts), p.last_exit || "–"],
      BAD.includes(p.state) ? [2] : [])));
    document.querySelector("#sinks tbody").replaceChildren(...s.sinks.map((k) => row(
      [k.name, k.age_s === null ? "no report yet" : k.state === "retrying" ? "RETRYING: " + k.cause : k.state,
        num(k.received), num(k.written), num(k.pending), num(k.dropped)],
      k.state === "retrying" ? [1] : [])));
  }

  // ---------------------------------------------------------------- start

  document.getElementById("login").addEventListener("submit", (e) => {
    e.preventDefault();
    setToken(document.getElementById("token").value.trim());
    document.getElementById("login").hidden = true;
    connect();
  });
  setInterval(() => {
    for (const c of st.cards.values()) showError(c);
  }, 1000);
  tokenFromHash();
  connect();
})();
