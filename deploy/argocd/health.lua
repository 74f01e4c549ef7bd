-- Argo CD health check for rewind.dev/Release.
--
-- Install it in argocd-cm as resource.customizations.health.rewind.dev_Release (see
-- docs/gitops.md). This directory is laid out as Argo CD's
-- resource_customizations/rewind.dev/Release/: health.lua, health_test.yaml listing the health
-- expected of each input, testdata/ (Releases captured from a real cluster). tests/gitops.rs runs
-- it with gopher-lua as Argo CD does, over the fixtures and over live Releases. It uses only what
-- Argo CD gives a customization without useOpenLibs: the base and table libraries (no string).
--
--   Release                                       Argo CD health
--   no status yet, or status.observedGeneration   Progressing  (Rewind has not judged this spec)
--     older than metadata.generation
--   Progressing, RollingBack                      Progressing
--   Healthy                                       Healthy
--   Degraded, Failed                              Degraded
--   RolledBack                                    Degraded     (names the blocked version, why,
--                                                               and the version running instead)
--   Paused                                        Suspended
--
-- The message is the Ready condition's, except where Rewind has not judged the Release yet and
-- for RolledBack.
local hs = {}

-- The message of condition `type`, or nil.
local function conditionMessage(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type and c.message ~= nil and c.message ~= "" then
      return c.message
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for Rewind to observe the Release"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  local seen = "none"
  if status.observedGeneration ~= nil then
    seen = tostring(status.observedGeneration)
  end
  hs.message = "Waiting for Rewind to observe generation " .. tostring(generation) ..
    " (status is of generation " .. seen .. ")"
  return hs
end

local phase = status.phase
local ready = conditionMessage(status.conditions, "Ready")

if phase == "Healthy" then
  hs.status = "Healthy"
elseif phase == "Progressing" or phase == "RollingBack" then
  hs.status = "Progressing"
elseif phase == "Degraded" or phase == "Failed" then
  hs.status = "Degraded"
elseif phase == "Paused" then
  hs.status = "Suspended"
elseif phase == "RolledBack" then
  hs.status = "Degraded"
  -- The version Rewind blocked, why, and the one it put back.
  local blocked = nil
  local why = nil
  if status.blocked ~= nil then
    blocked = status.blocked.version
    why = status.blocked.reason
  end
  local rollback = status.rollback
  if rollback ~= nil and rollback.from ~= nil then
    if blocked == nil then
      blocked = rollback.from.version
    end
    if rollback.from.version == blocked and rollback.trigger ~= nil and rollback.message ~= nil and rollback.message ~= "" then
      why = rollback.trigger .. ": " .. rollback.message
    end
  end
  local running = status.version
  if blocked ~= nil and running ~= nil then
    local message = "Rolled back to " .. running .. ": " .. blocked .. " is blocked"
    if why ~= nil and why ~= "" then
      message = message .. " (" .. why .. ")"
    end
    hs.message = message .. ". Change spec.version or set the rewind.dev/retry annotation to try " ..
      blocked .. " again"
    return hs
  end
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
  return hs
end

hs.message = ready or ("Release is " .. phase)
return hs
