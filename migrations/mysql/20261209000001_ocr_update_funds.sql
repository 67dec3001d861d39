-- A person's correction of every fund a screenshot holds (JSON: [{"fund_code", "hold_share"}]),
-- beside update_fund_code / update_hold_share, which stay the first fund's.
ALTER TABLE ocr_results ADD COLUMN update_funds LONGTEXT NULL AFTER update_hold_share;
