-- ArgoCD health check for caduceus.io/HealthcarePlatform.
-- Order: Degraded (condition Degraded=True) > Suspended (spec.paused or spec.stopped) >
-- Healthy (Ready=True and status.observedGeneration == metadata.generation) > Progressing.
-- Written for ArgoCD's Lua 5.1 interpreter (gopher-lua); tested with Lua 5.4 by
-- e2e/tests/argocd_health.rs against testdata/ (health_test.yaml).
local hs = {}

local function condition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local status = obj.status or {}
local spec = obj.spec or {}
local conditions = status.conditions
local degraded = condition(conditions, "Degraded")
local ready = condition(conditions, "Ready")

if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded, "The platform is degraded")
  return hs
end

if spec.stopped == true then
  hs.status = "Suspended"
  hs.message = "Platform is stopped: every workload is scaled to zero, data is kept"
  return hs
end

if spec.paused == true then
  hs.status = "Suspended"
  hs.message = "Platform is paused: spec changes are not applied"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
local observed = status.observedGeneration

if ready ~= nil and ready.status == "True" and observed ~= nil and observed == generation then
  hs.status = "Healthy"
  hs.message = describe(ready, "The platform is ready")
  return hs
end

hs.status = "Progressing"
if ready ~= nil and ready.status ~= "True" then
  hs.message = describe(ready, "Waiting for the platform to become ready")
elseif ready ~= nil then
  -- Ready=True describes an older generation: the operator has not caught up with the spec yet.
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
elseif status.message ~= nil and status.message ~= "" then
  hs.message = status.message
else
  hs.message = "Waiting for the operator to report status"
end
return hs
