-- Every version: lineage, model, dimension and counts.
SELECT v.version, v.parent, v.kind, v.model_name, v.dim, v.dtype, v.logit_scale,
       (SELECT count(*) FROM image_embeddings e WHERE e.version = v.version) AS images,
       (SELECT count(*) FROM text_embeddings t WHERE t.version = v.version) AS texts,
       (SELECT count(*) FROM errors r WHERE r.version = v.version) AS errors,
       v.created
FROM versions v
ORDER BY v.created;
