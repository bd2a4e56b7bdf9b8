-- At most one active model per meter. Two `detect run` started at once on a meter without a
-- model each trained one, so the meter had two active versions and every reading two scores;
-- the detector now trains and scores a meter under a per-meter advisory lock, and this index
-- refuses a second active model of a meter whatever writes it. Models shared by all meters
-- (meter_id NULL) are not covered: the detector never trains one.
--
-- First the repair, deterministic: of a meter's active models the newest version (the highest
-- number) stays active, the others are retired. Their scores and incidents stay as written.
UPDATE models AS older SET status = 'retired'
 WHERE older.status = 'active' AND older.meter_id IS NOT NULL
   AND EXISTS (SELECT FROM models AS newer
                WHERE newer.status = 'active' AND newer.meter_id = older.meter_id
                  AND newer.version > older.version);

CREATE UNIQUE INDEX models_one_active_idx ON models (meter_id) WHERE status = 'active';
COMMENT ON INDEX models_one_active_idx IS 'At most one active model per meter (models shared by all meters, meter_id NULL, are not covered); training retires the old version before it stores the new one';
