-- Argo CD health check for kiln.dev/TrainingRun (resource.customizations.health.kiln.dev_TrainingRun).
-- It reads only what the operator writes for kstatus too: status.phase, status.observedGeneration and
-- the Ready / Reconciling / Stalled conditions (see charts/kiln/README.md). Lua 5.1 (gopher-lua) syntax.
local hs = {}

local function condition(ctype)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function why(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.reason or fallback
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the kiln operator"
  return hs
end

local phase = obj.status.phase
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Spec change not yet observed by the kiln operator"
  return hs
end

local stalled = condition("Stalled")
if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = why(stalled, "Failed")
  return hs
end
if stalled ~= nil and stalled.status == "True" then
  -- Held in its phase by something a person must fix (missing Secret or teacher run, quota).
  hs.status = "Degraded"
  hs.message = phase .. ": " .. why(stalled, "Stalled")
  return hs
end
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = obj.status.message or "Succeeded"
  return hs
end
if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = obj.status.message or "Suspended"
  return hs
end

hs.status = "Progressing"
local msg = obj.status.message or phase
if obj.status.progress ~= nil and obj.status.progress.step ~= nil then
  msg = phase .. " step " .. tostring(obj.status.progress.step) .. ": " .. msg
else
  msg = phase .. ": " .. msg
end
hs.message = msg
return hs
