<#
.SYNOPSIS
  Registers keyhavend to start at logon for the current user (no admin).

.DESCRIPTION
  Creates the scheduled task \keyhaven\keyhavend that runs keyhavend.exe
  when the current user logs on, with the user's normal (limited) rights,
  and starts it now. keyhavend listens on the named pipe
  \\.\pipe\keyhaven-<user>, whose security descriptor admits only this
  user and SYSTEM; remote clients are refused.

  Logs go to %LOCALAPPDATA%\keyhaven\keyhavend.log.

.PARAMETER Keyhavend
  Path of keyhavend.exe. Default: keyhavend.exe on PATH, else
  %USERPROFILE%\.cargo\bin\keyhavend.exe (where `cargo install --path daemon`
  puts it).

.PARAMETER Uninstall
  Stops the daemon cleanly (keyhavend --stop), then stops and removes the
  task.

.EXAMPLE
  powershell -ExecutionPolicy Bypass -File packaging\windows\install.ps1
#>
param(
    [string]$Keyhavend,
    [switch]$Uninstall
)
$ErrorActionPreference = 'Stop'
$TaskName = 'keyhavend'
$TaskPath = '\keyhaven\'

if ($Uninstall) {
    # A clean stop first: the task's daemon has no console, so it gets no
    # Ctrl-C; `keyhavend --stop` signals its stop event and waits for it.
    $stopper = if ($Keyhavend) { $Keyhavend } else { (Get-Command keyhavend.exe -ErrorAction SilentlyContinue).Source }
    if ($stopper) { & $stopper --stop }
    Stop-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -ErrorAction SilentlyContinue
    Unregister-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -Confirm:$false
    Write-Host 'keyhavend logon task removed'
    return
}

if (-not $Keyhavend) {
    $found = Get-Command keyhavend.exe -ErrorAction SilentlyContinue
    $Keyhavend = if ($found) { $found.Source } else { Join-Path $env:USERPROFILE '.cargo\bin\keyhavend.exe' }
}
if (-not (Test-Path -LiteralPath $Keyhavend -PathType Leaf)) {
    throw "keyhavend.exe not found at '$Keyhavend'; pass -Keyhavend <path>"
}
$Keyhavend = (Resolve-Path -LiteralPath $Keyhavend).Path

$logDir = Join-Path $env:LOCALAPPDATA 'keyhaven'
New-Item -ItemType Directory -Force -Path $logDir | Out-Null
$log = Join-Path $logDir 'keyhavend.log'

$user = [System.Security.Principal.WindowsIdentity]::GetCurrent().Name
# cmd.exe redirects the daemon's stderr (its log) to a file; the window
# stays hidden because the task runs without an interactive console.
$action = New-ScheduledTaskAction -Execute "$env:SystemRoot\System32\cmd.exe" `
    -Argument "/d /c `"`"$Keyhavend`" 2>>`"$log`"`""
$trigger = New-ScheduledTaskTrigger -AtLogOn -User $user
$principal = New-ScheduledTaskPrincipal -UserId $user -LogonType Interactive -RunLevel Limited
$settings = New-ScheduledTaskSettingsSet -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries `
    -ExecutionTimeLimit ([TimeSpan]::Zero) -RestartCount 3 -RestartInterval (New-TimeSpan -Minutes 1) `
    -MultipleInstances IgnoreNew -Hidden

Register-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -Action $action -Trigger $trigger `
    -Principal $principal -Settings $settings -Description 'keyhaven per-user credential daemon' -Force | Out-Null
Start-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath
Write-Host "keyhavend registered to start at logon for $user and started; log: $log"
