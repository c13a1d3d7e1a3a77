'use strict';
// A small, ordinary Node.js shop API — express, prom-client 15 and node-postgres, wired the way a
// typical team does it — that perfbook's integration tests diagnose (tests/nodestack.py starts it).
// Nothing here is written for perfbook: stock default metrics, one request-duration histogram, the
// pool's counts as gauges, plain SQL.
//
//   PORT=3000 DATABASE_URL=postgresql://app@127.0.0.1:5432/shop INSTANCE_NAME=api-1 node server.js
//
// Fault switches (environment; all off by default):
//   FAULT_N_PLUS_ONE=1          GET /api/products looks up each row's category with its own query
//   FAULT_EVENT_LOOP_BLOCK_MS=N a synchronous busy loop of N ms on the event loop every second
//   POOL_MAX=N                  the pool's size (default 10; the pool-saturation fault runs it at 2)
//   FAULT_HOLD_CONNECTION_MS=N  GET /api/products/:id keeps its connection checked out, in an open
//                               transaction, across an N ms call to a (simulated) stock service
// The missing index is the database's (the fixture leaves clicks(product_id, created_at) out) and
// the large export is traffic's (GET /api/export exists always; the fixture calls it every 20 s).

const express = require('express');
const client = require('prom-client');
const { Pool } = require('pg');

const PORT = Number(process.env.PORT || 3000);
const HOST = process.env.HOST || '127.0.0.1';
const INSTANCE = process.env.INSTANCE_NAME || require('os').hostname();
const POOL_MAX = Number(process.env.POOL_MAX || 10);
const N_PLUS_ONE = ['1', 'true', 'on'].includes(String(process.env.FAULT_N_PLUS_ONE || '').toLowerCase());
const BLOCK_MS = Number(process.env.FAULT_EVENT_LOOP_BLOCK_MS || 0);
const HOLD_MS = Number(process.env.FAULT_HOLD_CONNECTION_MS || 0);

// --- metrics -------------------------------------------------------------------------------
client.collectDefaultMetrics();

const httpDuration = new client.Histogram({
  name: 'http_request_duration_seconds',
  help: 'Duration of HTTP requests in seconds',
  labelNames: ['method', 'route', 'status_code'],
});

const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: POOL_MAX, idleTimeoutMillis: 30000 });
pool.on('error', (err) => console.error('pool error:', err.message));

// node-postgres has no metrics of its own: export its counts at scrape time.
const poolGauge = (name, help, value) => new client.Gauge({ name, help, collect() { this.set(value()); } });
poolGauge('pg_pool_connections_max', 'Maximum connections in the pg pool', () => POOL_MAX);
poolGauge('pg_pool_connections_open', 'Connections open in the pg pool', () => pool.totalCount);
poolGauge('pg_pool_connections_idle', 'Idle connections in the pg pool', () => pool.idleCount);
poolGauge('pg_pool_connections_busy', 'Connections checked out of the pg pool', () => pool.totalCount - pool.idleCount);
poolGauge('pg_pool_requests_waiting', 'Queries waiting for a pg pool connection', () => pool.waitingCount);

// --- app -----------------------------------------------------------------------------------
const app = express();

app.use((req, res, next) => {
  const end = httpDuration.startTimer();
  res.on('finish', () => {
    const route = req.route ? req.baseUrl + req.route.path : 'unmatched';
    end({ method: req.method, route, status_code: res.statusCode });
  });
  next();
});

const wrap = (fn) => (req, res, next) => fn(req, res).catch(next);
const intParam = (v, dflt, max) => {
  const n = Number.parseInt(v, 10);
  return Number.isFinite(n) && n > 0 ? Math.min(n, max) : dflt;
};

async function getCategory(id, db = pool) {
  const { rows } = await db.query('SELECT id, name, slug FROM categories WHERE id = $1', [id]);
  return rows[0] || null;
}

app.get('/health', wrap(async (req, res) => {
  await pool.query('SELECT 1');
  res.json({ status: 'ok', instance: INSTANCE });
}));

app.get('/api/products', wrap(async (req, res) => {
  const limit = intParam(req.query.limit, 20, 100);
  const page = intParam(req.query.page, 1, 1000);
  if (N_PLUS_ONE) {
    const { rows } = await pool.query(
      'SELECT id, name, price, category_id FROM products ORDER BY id LIMIT $1 OFFSET $2',
      [limit, (page - 1) * limit]);
    for (const p of rows) {
      p.category = await getCategory(p.category_id);
    }
    return res.json(rows);
  }
  const { rows } = await pool.query(
    'SELECT p.id, p.name, p.price, p.category_id, c.name AS category_name, c.slug AS category_slug ' +
    'FROM products p JOIN categories c ON c.id = p.category_id ORDER BY p.id LIMIT $1 OFFSET $2',
    [limit, (page - 1) * limit]);
  res.json(rows);
}));

async function productPage(db, id) {
  const { rows } = await db.query(
    'SELECT id, name, description, price, stock, category_id, created_at FROM products WHERE id = $1', [id]);
  if (!rows.length) return null;
  const product = rows[0];
  product.category = await getCategory(product.category_id, db);
  return product;
}

app.get('/api/products/:id', wrap(async (req, res) => {
  const id = intParam(req.params.id, 0, 2 ** 31 - 1);
  let product;
  if (HOLD_MS > 0) {
    // "Reserve the stock": one transaction, its connection held while the stock service answers.
    const conn = await pool.connect();
    try {
      await conn.query('BEGIN');
      product = await productPage(conn, id);
      await new Promise((resolve) => setTimeout(resolve, HOLD_MS));
      await conn.query('COMMIT');
    } catch (err) {
      await conn.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      conn.release();
    }
  } else {
    product = await productPage(pool, id);
  }
  if (!product) return res.status(404).json({ error: 'not found' });
  res.json(product);
}));

app.get('/api/products/:id/clicks', wrap(async (req, res) => {
  const { rows } = await pool.query(
    'SELECT id, source, created_at FROM clicks WHERE product_id = $1 ORDER BY created_at DESC LIMIT $2',
    [intParam(req.params.id, 0, 2 ** 31 - 1), intParam(req.query.limit, 20, 100)]);
  res.json(rows);
}));

// The finance team's export: every click of the last 60 days, no paging.
app.get('/api/export', wrap(async (req, res) => {
  const since = new Date(Date.now() - 60 * 24 * 3600 * 1000);
  const { rows } = await pool.query(
    'SELECT id, product_id, source, created_at FROM clicks WHERE created_at >= $1', [since]);
  res.json({ count: rows.length, clicks: rows });
}));

app.get('/metrics', wrap(async (req, res) => {
  res.set('Content-Type', client.register.contentType);
  res.end(await client.register.metrics());
}));

app.use((err, req, res, next) => {  // eslint-disable-line no-unused-vars
  console.error(`${req.method} ${req.originalUrl}: ${err.message}`);
  res.status(500).json({ error: 'internal error' });
});

// --- faults --------------------------------------------------------------------------------
if (BLOCK_MS > 0) {
  // "Compute the recommendations": synchronous work on the event loop, once a second.
  setInterval(() => {
    const until = Date.now() + BLOCK_MS;
    let x = 0;
    while (Date.now() < until) x += Math.sqrt(x + 1);
    return x;
  }, 1000);
}

// --- start/stop ----------------------------------------------------------------------------
const server = app.listen(PORT, HOST, () => {
  console.log(`${INSTANCE} listening on http://${HOST}:${PORT} (pool max ${POOL_MAX}, ` +
              `n+1 ${N_PLUS_ONE ? 'on' : 'off'}, event-loop block ${BLOCK_MS} ms/s, connection hold ${HOLD_MS} ms)`);
});

function shutdown(signal) {
  console.log(`${INSTANCE}: ${signal}, shutting down`);
  server.close();
  server.closeAllConnections?.();
  pool.end().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 3000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
