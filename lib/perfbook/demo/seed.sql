-- perfbook demo: seed data (deterministic: setseed), generated in the database.
SELECT setseed(0.42);

INSERT INTO demo_meta VALUES ('seeded_at', now()::text);

INSERT INTO categories (id, name, slug, created_at)
SELECT i, initcap(w), w || '-' || i, now() - interval '800 days'
FROM unnest(ARRAY[
  'laptops','phones','tablets','headphones','speakers','cameras','lenses','drones','monitors','keyboards',
  'mice','routers','smartwatches','fitness','cycling','running','camping','hiking','fishing','kitchen',
  'coffee','blenders','cookware','knives','lighting','furniture','mattresses','bedding','garden','tools',
  'paint','books','comics','boardgames','videogames','consoles','toys','baby','pets','beauty',
  'skincare','haircare','fragrance','jewelry','watches','bags','shoes','jackets','supplements','office'
]) WITH ORDINALITY AS t(w, i);

-- ~100k products; categories unevenly popular (a few big ones, as in real shops).
INSERT INTO products (category_id, name, description, price, stock, rating, affiliate_url, created_at, updated_at)
SELECT 1 + floor(50 * power(random(), 1.3))::int,
       (ARRAY['Pro','Ultra','Mini','Max','Eco','Smart','Classic','Air','Neo','Prime'])[1 + floor(random()*10)::int]
         || ' ' || (ARRAY['Widget','Gadget','Kit','Set','Bundle','Edition','Series','Pack'])[1 + floor(random()*8)::int]
         || ' ' || g,
       'Item ' || g || ': ' || md5(g::text) || ' ' || md5((g * 7)::text) || ' ' || md5((g * 13)::text),
       round((5 + random() * 495)::numeric, 2),
       floor(random() * 500)::int,
       round((1 + random() * 4)::numeric, 1)::real,
       'https://shop.example/p/' || g || '?tag=aiaff-20',
       ts, ts + random() * interval '30 days'
FROM (SELECT g, now() - random() * interval '730 days' AS ts FROM generate_series(1, 100000) g) s;

-- ~500k clicks over 90 days, heavily skewed to popular (low-id) products.
INSERT INTO clicks (product_id, session_ref, source, created_at)
SELECT 1 + floor(100000 * power(random(), 3))::bigint,
       md5((g % 40000)::text),
       (ARRAY['google','tiktok','youtube','instagram','email','direct'])[1 + floor(random()*6)::int],
       now() - random() * interval '90 days'
FROM generate_series(1, 500000) g;

-- ~20k generated content rows.
INSERT INTO content (product_id, kind, title, body, status, created_at)
SELECT 1 + floor(100000 * power(random(), 2))::bigint,
       (ARRAY['review','video_script','blog_post','comparison'])[1 + floor(random()*4)::int],
       'Why the ' || g || ' is worth it',
       repeat(md5(g::text) || ' lorem ipsum dolor sit amet ', 12),
       (ARRAY['draft','published','published','published'])[1 + floor(random()*4)::int],
       now() - random() * interval '180 days'
FROM generate_series(1, 20000) g;

-- 50k shopping sessions.
INSERT INTO sessions (id, user_ref, cart, last_seen_at, expires_at)
SELECT g, md5(g::text),
       jsonb_build_object('items', jsonb_build_array(1 + floor(random()*100000)::int, 1 + floor(random()*100000)::int),
                          'currency', 'USD'),
       now() - random() * interval '2 days',
       now() + random() * interval '28 days'
FROM generate_series(1, 50000) g;

SELECT setval(pg_get_serial_sequence('products', 'id'), (SELECT max(id) FROM products));
SELECT setval(pg_get_serial_sequence('clicks', 'id'), (SELECT max(id) FROM clicks));
SELECT setval(pg_get_serial_sequence('content', 'id'), (SELECT max(id) FROM content));
